"""labkit: stand up, drive and measure the DIT247 event-driven image pipeline lab.

The package is layered; each layer imports only the ones above it in this list:

- ``labkit.errors`` and ``labkit.core``: the error types, progress, file writes;
- ``labkit.stack``: config, secrets, services, backends and ``Lab``;
- ``labkit.faas``: the OpenWhisk-compatible runner (a server, run as a service);
- ``labkit.pipeline``: deploy, upload, metrics, Kafka offsets, reconcile, audit;
- ``labkit.analysis``: SLA verdicts and reports;
- ``labkit.experiments``: load, faults, runs, the fault matrix, the benchmark;
- ``labkit.teaching``: notebook helpers, widgets and the notebook runner;
- ``labkit.cli``: the ``labkit`` command.

``from labkit import Lab`` is the short way to the one class every notebook needs.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import labkit.errors` does not import the whole stack.
    if name == "Lab":
        from labkit.stack.lab import Lab

        return Lab
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
