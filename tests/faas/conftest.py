"""Fixtures that run the FaaS runner as a real process on a free loopback port."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from labkit.stack.clients.openwhisk import OpenWhiskClient

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def make_auth() -> str:
    """A fresh OpenWhisk-style ``uuid:key`` with a 64-character key."""
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(64))
    return f"{uuid.uuid4()}:{key}"


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Runner:
    """A running ``python -m labkit.faas`` process."""

    proc: subprocess.Popen[bytes]
    base_url: str
    auth: str
    data_dir: Path
    log_path: Path

    def client(self, **kwargs: object) -> OpenWhiskClient:
        """A client bound to this runner."""
        return OpenWhiskClient(self.base_url, self.auth, **kwargs)  # type: ignore[arg-type]

    def worker_pids(self) -> set[int]:
        """Pids of the runner's worker processes (its direct children)."""
        try:
            return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def output(self) -> str:
        """Everything the runner printed so far."""
        return self.log_path.read_text(errors="replace")


def _wait_ready(runner: Runner) -> None:
    """Poll ``/ping`` until it answers; fail fast if the process dies."""
    polling = Retrying(
        stop=stop_after_delay(READY_TIMEOUT_S),
        wait=wait_fixed(0.05),
        retry=retry_if_exception_type(httpx.TransportError),
        reraise=True,
    )
    for attempt in polling:
        with attempt:
            if runner.proc.poll() is not None:
                raise RuntimeError(f"runner exited with {runner.proc.returncode}:\n{runner.output()}")
            httpx.get(f"{runner.base_url}/ping", timeout=1.0).raise_for_status()


def start_runner(data_dir: Path, *extra: str, auth: str | None = None) -> Runner:
    """Start the runner and wait until it is ready.

    Args:
        data_dir: Data directory (kept across restarts by the caller).
        *extra: Extra CLI flags.
        auth: Key to use; a fresh one by default.

    Returns:
        The ready runner.
    """
    auth = auth or make_auth()
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"runner-{port}.log"
    env = {**os.environ, "LABKIT_FAAS_AUTH": auth}
    cmd = [sys.executable, "-m", "labkit.faas", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--log-level", "warning", *extra]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    runner = Runner(proc, f"http://127.0.0.1:{port}", auth, data_dir, log_path)
    try:
        _wait_ready(runner)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return runner


def stop_runner(runner: Runner) -> int:
    """SIGTERM the runner, wait, and assert that no worker outlived it.

    Returns:
        The runner's exit status.
    """
    workers = [psutil.Process(pid) for pid in runner.worker_pids() if psutil.pid_exists(pid)]
    runner.proc.send_signal(signal.SIGTERM)
    try:
        code = runner.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        runner.proc.kill()
        runner.proc.wait()
        raise AssertionError("runner did not stop within the timeout after SIGTERM") from None
    _, alive = psutil.wait_procs(workers, timeout=5.0)
    leftovers = [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"worker processes left behind: {leftovers}"
    assert runner.auth.split(":")[1] not in runner.output(), "the runner printed its key"
    return code


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """One runner for the module: short idle timeout, small worker cap."""
    r = start_runner(tmp_path_factory.mktemp("faas"), "--idle-timeout-s", "2", "--max-workers", "4")
    yield r
    code = stop_runner(r)
    assert code in (0, -signal.SIGTERM), r.output()


@pytest.fixture()
def ow(runner: Runner) -> Iterator[OpenWhiskClient]:
    """A client for the module's runner."""
    with runner.client() as client:
        yield client


class RunnerFactory:
    """Starts extra runners for a test and stops whatever is still running afterwards."""

    def __init__(self) -> None:
        """No runner yet."""
        self._started: list[Runner] = []

    def start(self, data_dir: Path, *extra: str, auth: str | None = None) -> Runner:
        """Start a runner (see :func:`start_runner`)."""
        runner = start_runner(data_dir, *extra, auth=auth)
        self._started.append(runner)
        return runner

    @staticmethod
    def stop(runner: Runner) -> int:
        """Stop a runner (see :func:`stop_runner`)."""
        return stop_runner(runner)

    def cleanup(self) -> None:
        """Stop runners the test left running."""
        for runner in self._started:
            if runner.proc.poll() is None:
                stop_runner(runner)


@pytest.fixture()
def runner_factory() -> Iterator[RunnerFactory]:
    """Start extra runners (restart tests); they are stopped at the end."""
    factory = RunnerFactory()
    yield factory
    factory.cleanup()
