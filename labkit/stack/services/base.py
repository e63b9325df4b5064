"""The shape every service shares: what it declares, how it is installed, started and found ready.

A service is one class in a module of this package. Its class attributes are its whole
declaration: the config's ports, the backends' tables, the compose checks and the
experiments' lists are derived from them (:mod:`labkit.stack.services.catalog`), so adding
a service is one module plus its entry in ``stack/compose.yaml`` (docs/extending.md).
"""

from __future__ import annotations

import os
import signal
import sys
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import psutil

from labkit.errors import ServiceError
from labkit.stack.install import InstallStep
from labkit.stack.process import (
    ProcessRecord,
    ProcessTable,
    in_group,
    is_alive,
    is_paused,
    processes_in,
    signal_group,
    spawn,
    terminate,
)
from labkit.stack.readiness import Readiness, poll_until
from labkit.stack.services.declarations import ServiceDeclaration
from labkit.stack.tls import LabTLS
from labkit.stack.versions import pin

if TYPE_CHECKING:  # the context's config derives its ports from the services
    from labkit.stack.context import LabContext

LOG_TAIL_LINES = 20


class Service(ServiceDeclaration, ABC):
    """One service. Subclasses declare the class attributes of :class:`ServiceDeclaration` and
    ``install_step``, ``command``, ``readiness`` and ``endpoint``; this base gives them the verbs
    ``start``, ``wait_ready``, ``endpoint``, ``stop`` (and ``kill``, ``pause``, ``resume``)."""

    hint: ClassVar[str] = ""
    # True for services that print a secret of their own config: their output
    # then passes through labkit.stack.logpipe, which masks the secrets.
    output_has_secrets: ClassVar[bool] = False
    # True for services whose own listener serves TLS when the lab runs it (labkit.stack.tls).
    serves_tls: ClassVar[bool] = False

    def __init__(self, ctx: LabContext):
        self.ctx = ctx
        self.config = ctx.config
        self.table = ProcessTable(ctx.config.run_dir)

    @classmethod
    def instances(cls, ctx: LabContext) -> list[Service]:
        """The processes of this service a lab with ``ctx`` runs: one, unless the service has a
        topology of its own (Kafka's brokers, :mod:`labkit.stack.services.kafka`)."""
        return [cls(ctx)]

    # -- how it runs ---------------------------------------------------------
    @abstractmethod
    def install_step(self) -> InstallStep | None:
        """How ``labkit install`` gets this service into the cache (None: nothing to install)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the service in the foreground."""

    @abstractmethod
    def readiness(self) -> Readiness:
        """The check that says the service is ready to serve."""

    @abstractmethod
    def endpoint(self) -> str:
        """The address clients use, e.g. ``http://127.0.0.1:7070``."""

    def environment(self) -> dict[str, str]:
        """Extra environment variables (secrets go here, never on the command line)."""
        return {}

    def prepare(self) -> None:
        """Write config files and initialise storage before the first start."""

    def on_ready(self) -> None:
        """Provision what later services rely on (topics, say), once the service is ready."""

    def running_version(self, recorded: str) -> str:
        """The version the running service reports of itself, for ``labkit status``; ``recorded``
        (the pin it was started at) for a service that reports none."""
        return recorded

    def data_paths(self) -> list[Path]:
        """What ``labkit down --wipe`` deletes: its working directory, and any data it keeps elsewhere."""
        return [self.workdir]

    # -- facts of this lab ----------------------------------------------------
    @property
    def version(self) -> str:
        return pin(self.pin_key)["version"]

    @property
    def ports(self) -> dict[str, int]:
        return {p: self.config.port(p) for p in self.listeners()}

    @property
    def log_path(self) -> Path:
        return self.config.logs_dir / f"{self.name}.log"

    @property
    def workdir(self) -> Path:
        return self.config.data_dir / self.name

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def tls(self) -> LabTLS | None:
        """The lab's certificate and CA when it runs TLS (natively), else None."""
        return self.ctx.tls

    @property
    def scheme(self) -> str:
        """``https`` for a service that serves TLS (it checks :attr:`tls`), else ``http``."""
        return "https" if self.serves_tls and self.tls else "http"

    def record(self) -> ProcessRecord | None:
        """The running process of this service, or None when it is not running."""
        return self.table.load(self.name)

    def orphans(self) -> list[psutil.Process]:
        """Processes running in this service's workdir that its state file does not account for:
        what a ``labkit`` killed between spawning a service and recording it leaves behind."""
        record = self.record()
        return [p for p in processes_in(self.workdir) if record is None or not in_group(p, record.pid)]

    # -- verbs --------------------------------------------------------------
    def start(self) -> ProcessRecord:
        """Start the process in the background and remember it (does not wait)."""
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.prepare()
        if self.log_path.exists():  # keep one previous log; log checks must not see old lines
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        env = {**_base_env(), **self.environment()}
        cmd = self.command()
        if self.output_has_secrets:
            env["LABKIT_REDACT"] = "\n".join(self.ctx.secrets.secret_values())
            cmd = [sys.executable, "-m", "labkit.stack.logpipe", "--", *cmd]
        try:
            proc = spawn(cmd, env, self.workdir, self.log_path)
        except OSError as e:
            raise ServiceError(f"{self.name} could not be started ({' '.join(cmd[:1])}): {e}. "
                               "Hint: `labkit install --force` rebuilds the service cache.") from e
        record = ProcessRecord(self.name, proc.pid, proc.create_time(), cmd, self.ports, self.version)
        self.table.save(record)
        return record

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the readiness check holds.

        Raises:
            ServiceError: the process died or the check did not hold in time.
        """
        timeout_s = timeout_s or self.config.ready_timeout_s
        record = self.record()
        check = self.readiness()
        alive = (lambda: is_alive(record)) if record else (lambda: True)
        outcome = poll_until(check.probe, timeout_s, self.config.poll_interval_s, alive)
        if outcome == "ready":
            return
        what = "exited before it was ready" if outcome == "died" else f"was not ready after {timeout_s:.0f} s"
        raise ServiceError(
            f"{self.name} {what} (waited for {check.describe()}).\n"
            f"Last lines of {self.log_path}:\n{self.log_tail()}\n"
            f"Hint: {self.hint or 'read the log above'}; then run `labkit up` again."
        )

    def healthy(self) -> bool:
        return self.readiness().probe()

    def stop(self) -> None:
        record = self.record()
        if record:
            terminate(record, self.config.stop_timeout_s)
        self.table.forget(self.name)

    def kill(self) -> None:
        """Kill -9 the process group, the way a crash would; labkit forgets nothing else."""
        record = self.record()
        if record:
            terminate(record, 0, force=True)
        self.table.forget(self.name)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def paused(self) -> bool:
        record = self.record()
        return bool(record and is_paused(record))

    def _signal(self, sig: signal.Signals) -> None:
        record = self.record()
        if record is None:
            raise ServiceError(f"{self.name} is not running. Hint: `labkit start {self.name}`.")
        signal_group(record, sig)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open(errors="replace") as f:
                return "".join(deque(f, maxlen=lines)).rstrip() or "(log is empty)"
        except FileNotFoundError:
            return "(no log yet)"


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "USER")
    return {k: os.environ[k] for k in keep if k in os.environ}

