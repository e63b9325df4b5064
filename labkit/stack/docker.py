"""A Docker engine of the lab's own, the compose plugin and the images' base, for the compose backend.

:class:`Engine` runs a private ``dockerd`` (vfs storage, its data, run state and socket under
``CACHE_DIR/docker``, never the system's socket) for machines where no Docker runs, such as
CI: ``labkit docker start`` / ``stop``, or the compose stack test. :meth:`Engine.env` is what
points the ``docker`` CLI (and so the compose backend) at it.

:func:`ensure_compose_plugin` builds Docker's compose plugin from its pin with Go, into that
engine's CLI config. :func:`ensure_base` makes the images' base, ``debian:bookworm-slim``,
from Debian's packages with debootstrap when no registry can be reached; where one can,
``docker pull debian:bookworm-slim`` gives the same.

The services' images themselves are :mod:`labkit.stack.images`'.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.versions import pin

DOCKER_DIR = "docker"
ENGINE_START_S = 60.0
ENGINE_STOP_S = 60.0


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=timeout, input=input, check=False)


def tail(result: subprocess.CompletedProcess, lines: int = 15) -> str:
    out = result.stderr or result.stdout or b""
    text = out.decode(errors="replace") if isinstance(out, bytes) else out
    return "\n".join(text.strip().splitlines()[-lines:])


class Engine:
    """A private dockerd: data, exec root and socket under ``CACHE_DIR/docker``."""

    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir).absolute() / DOCKER_DIR
        self.data_root = self.root / "data"
        self.exec_root = self.root / "run"
        self.socket = self.root / "docker.sock"
        self.pidfile = self.root / "dockerd.pid"
        self.log = self.root / "dockerd.log"
        self.config_dir = self.root / "config"  # the CLI's DOCKER_CONFIG: the compose plugin lives here

    def env(self) -> dict[str, str]:
        """The variables that point the docker CLI and its compose plugin at this engine."""
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.config_dir)}

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def answers(self) -> bool:
        try:
            return run(["docker", "version", "--format", "{{.Server.Version}}"], self.child_env(), timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def start(self, reporter: Reporter = QUIET) -> None:
        """Start dockerd unless it answers already; wait until it does.

        Raises:
            LabConfigError: dockerd is not installed, or not run as root.
            ServiceError: it did not answer in time (its log's tail is shown).
        """
        if self.answers():
            return
        if shutil.which("dockerd") is None:
            raise LabConfigError("The lab's Docker engine needs dockerd, which is not on PATH. "
                                 "Fix: install Docker (Debian: `apt-get install docker.io`).")
        if os.geteuid() != 0:
            raise LabConfigError("A private Docker engine runs as root only. Fix: run it as root, or use "
                                 "the system's Docker (unset DOCKER_HOST) or LABKIT_BACKEND=native.")
        for d in (self.data_root, self.exec_root, self.config_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        cmd = ["dockerd", "--storage-driver", "vfs", "--data-root", str(self.data_root),
               "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile),
               "-H", f"unix://{self.socket}", "--bridge", "none",
               "--containerd-namespace", "labkit", "--containerd-plugins-namespace", "labkit-plugins"]
        with reporter.step("start the lab's Docker engine"), self.log.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + ENGINE_START_S
            while not self.answers():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
                    if proc.poll() is None:
                        proc.terminate()
                    raise ServiceError(f"The lab's dockerd did not answer on {self.socket}:\n{tail}")
                time.sleep(0.5)

    def processes(self) -> list[psutil.Process]:
        """dockerd, its containerd, the shims and every container's process: all that must go at stop."""
        found: dict[int, psutil.Process] = {}
        root = str(self.root)
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if root in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        return [p for p in found.values() if _alive(p)]

    def stop(self, reporter: Reporter = QUIET) -> None:
        """Stop dockerd (it stops its containers and its containerd); then whatever is left.

        Raises:
            ServiceError: a process of the engine outlived SIGKILL.
        """
        left = self.processes()
        if not left:
            return
        with reporter.step("stop the lab's Docker engine"):
            daemon = [p for p in left if p.pid == self.pid()] or [p for p in left if p.name() == "dockerd"]
            for p in daemon:
                _signal(p, signal.SIGTERM)
            psutil.wait_procs(daemon, timeout=ENGINE_STOP_S)
            rest = self.processes()
            for p in rest:
                _signal(p, signal.SIGTERM)
            _, alive = psutil.wait_procs(rest, timeout=10)
            for p in alive:
                _signal(p, signal.SIGKILL)
            _, alive = psutil.wait_procs(alive, timeout=10)
        if alive:
            raise ServiceError(f"The lab's Docker engine left processes: {', '.join(str(p.pid) for p in alive)}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


# -- the compose plugin ---------------------------------------------------------
def compose_plugin(config_dir: Path) -> Path:
    return config_dir / "cli-plugins" / "docker-compose"


def ensure_compose_plugin(config_dir: Path, reporter: Reporter = QUIET) -> Path:
    """Build Docker's compose plugin from its pin (``[docker_compose]``) with Go, unless built.

    It is built inside the module's own directory, so its go.mod (with its replace and
    exclude lines) decides every dependency, as in the project's own release builds.

    Raises:
        LabConfigError: Go is missing.
        ServiceError: the download or the build failed.
    """
    p = pin("docker_compose")
    target = compose_plugin(config_dir)
    stamp = target.with_name("docker-compose.version")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == p["version"]:
        return target
    if shutil.which("go") is None:
        raise LabConfigError("Building Docker's compose plugin needs Go, which is not on PATH. Fix: install Go "
                             f"{pin('toolchains')['go']} or newer, or install the docker-compose-plugin package.")
    module = f"{p['go_module']}@{p['version']}"
    with reporter.step(f"build docker compose {p['version']}"):
        found = run(["go", "mod", "download", "-json", module], timeout=900)
        if found.returncode != 0:
            raise ServiceError(f"`go mod download {module}` failed:\n{tail(found)}")
        source = Path(json.loads(found.stdout)["Dir"])
        target.parent.mkdir(parents=True, exist_ok=True)
        ldflags = f"-s -w -X {p['go_module']}/internal.Version={p['version']}"
        built = run(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(target), "./cmd"],
                     {**os.environ, "CGO_ENABLED": "0"}, cwd=source, timeout=1800)
        if built.returncode != 0:
            raise ServiceError(f"Building docker compose {p['version']} failed:\n{tail(built)}")
        stamp.write_text(p["version"] + "\n")
    return target


# -- the base image -------------------------------------------------------------
def image_exists(env: dict[str, str], ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], env, timeout=60).returncode == 0


def ensure_base(env: dict[str, str], workdir: Path, reporter: Reporter = QUIET) -> str:
    """``debian:bookworm-slim`` (``[compose_images] base``), made with debootstrap unless present.

    Raises:
        LabConfigError: debootstrap is missing.
        ServiceError: debootstrap or the import failed.
    """
    p = pin("compose_images")
    ref = p["base"]
    if image_exists(env, ref):
        return ref
    if shutil.which("debootstrap") is None:
        raise LabConfigError(f"No {ref} image, and no debootstrap to make it. Fix: `docker pull {ref}` "
                             "where a registry is reachable, or install debootstrap.")
    with reporter.step(f"make {ref} with debootstrap"), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        made = run(["debootstrap", "--variant=minbase", p["suite"], str(rootfs)], timeout=1800)
        if made.returncode != 0:
            raise ServiceError(f"debootstrap {p['suite']} failed:\n{tail(made)}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", ref], stdin=tar.stdout, capture_output=True,
                                  env=env, check=False)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ServiceError(f"Importing {ref} failed:\n{tail(imported)}")
    return ref
