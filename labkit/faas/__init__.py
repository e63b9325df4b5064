"""labkit's own OpenWhisk-compatible FaaS runner: a server the stack runs as its ``faas`` service.

Run it with ``python -m labkit.faas --data-dir DIR`` (auth from ``LABKIT_FAAS_AUTH``). Talk
to it, or to a real OpenWhisk, with :class:`labkit.stack.clients.openwhisk.OpenWhiskClient`.
It needs nothing of labkit but the error types and ``labkit.core``.
"""
