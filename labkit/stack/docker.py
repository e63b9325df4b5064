"""A Docker engine of the lab's own, and the compose backend's images, built from the pins.

:class:`Engine` runs a private ``dockerd`` (vfs storage, its data, run state and socket under
``CACHE_DIR/docker``, never the system's socket) for machines where no Docker runs, such as
CI: ``labkit docker start`` / ``stop``, or the compose stack test. :meth:`Engine.env` is what
points the ``docker`` CLI (and so the compose backend) at it.

:func:`ensure_compose_plugin` builds Docker's compose plugin from its pin with Go, into that
engine's CLI config. :func:`ensure_base` makes the images' base, ``debian:bookworm-slim``,
from Debian's packages with debootstrap when no registry can be reached; where one can,
``docker pull debian:bookworm-slim`` gives the same.

:func:`ensure_images` builds the images ``stack/compose.yaml`` runs, one per service, from
``stack/images/<name>/Dockerfile``: each context is staged from what ``labkit install``
builds from ``stack/versions.toml`` for the native backend (the versitygw, Mailpit and
Toxiproxy binaries, Kafka's jars, Node-RED's node_modules, labkit's FaaS runner), so both
backends run the same code. An image is rebuilt only when its staged sources changed
(the ``labkit.sources`` label holds their digest).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.install import install
from labkit.stack.versions import STACK_DIR, pin

IMAGES_DIR = STACK_DIR / "images"
HTTP_OK = IMAGES_DIR / "http-ok"
DOCKER_DIR = "docker"
SOURCES_LABEL = "labkit.sources"
ENGINE_START_S = 60.0
ENGINE_STOP_S = 60.0
# What the FaaS runner and the resize action import (their versions: constraints.txt).
FAAS_REQUIREMENTS = ("pydantic", "starlette", "uvicorn", "tenacity", "psutil", "filelock")
ACTION_REQUIREMENTS = STACK_DIR / "actions" / "requirements.txt"


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=timeout, input=input, check=False)


def _tail(result: subprocess.CompletedProcess, lines: int = 15) -> str:
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
            return _run(["docker", "version", "--format", "{{.Server.Version}}"], self.child_env(), timeout=20).returncode == 0
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
        found = _run(["go", "mod", "download", "-json", module], timeout=900)
        if found.returncode != 0:
            raise ServiceError(f"`go mod download {module}` failed:\n{_tail(found)}")
        source = Path(json.loads(found.stdout)["Dir"])
        target.parent.mkdir(parents=True, exist_ok=True)
        ldflags = f"-s -w -X {p['go_module']}/internal.Version={p['version']}"
        built = _run(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(target), "./cmd"],
                     {**os.environ, "CGO_ENABLED": "0"}, cwd=source, timeout=1800)
        if built.returncode != 0:
            raise ServiceError(f"Building docker compose {p['version']} failed:\n{_tail(built)}")
        stamp.write_text(p["version"] + "\n")
    return target


# -- the base image -------------------------------------------------------------
def image_exists(env: dict[str, str], ref: str) -> bool:
    return _run(["docker", "image", "inspect", ref], env, timeout=60).returncode == 0


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
        made = _run(["debootstrap", "--variant=minbase", p["suite"], str(rootfs)], timeout=1800)
        if made.returncode != 0:
            raise ServiceError(f"debootstrap {p['suite']} failed:\n{_tail(made)}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", ref], stdin=tar.stdout, capture_output=True,
                                  env=env, check=False)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ServiceError(f"Importing {ref} failed:\n{_tail(imported)}")
    return ref


# -- the services' images ---------------------------------------------------------
# Every image is its base, one COPY of a staged root file system (``rootfs/`` of the context),
# and at most one RUN: vfs stores each layer as a whole copy of the file system.
@dataclass(frozen=True)
class ImageSpec:
    """One image of ``stack/compose.yaml``: its directory under ``stack/images`` and its tag."""

    name: str
    tag: str
    # path in the image -> source path (None: an empty directory anyone may write to, a volume's mount point)
    sources: Callable[[object], dict[str, Path | None]]


def _target(ctx, service: str) -> Path:
    from labkit.stack.services.catalog import service_type

    return service_type(service)(ctx).install_step().target(ctx.config.cache_dir)


def _own(name: str, *files: str, under: str) -> dict[str, Path | None]:
    return {f"{under}/{f}": IMAGES_DIR / name / f for f in files}


def _nodered_sources(ctx) -> dict[str, Path | None]:
    app = _target(ctx, "nodered")
    node = shutil.which("node")
    if node is None:
        raise LabConfigError("The Node-RED image runs the node binary labkit runs natively, and there is none "
                             f"on PATH. Fix: install Node.js {pin('toolchains')['node']}.")
    nodered, root = STACK_DIR / "nodered", "usr/src/node-red"
    return {"usr/local/bin/node": Path(node).resolve(), f"{root}/node_modules": app / "node_modules",
            f"{root}/nodes": app / "nodes", f"{root}/package.json": app / "package.json",
            f"{root}/settings.js": nodered / "settings.js", f"{root}/tls-listener.js": nodered / "tls-listener.js",
            "data": None}


def _faas_sources(ctx) -> dict[str, Path | None]:
    import labkit

    return {"opt/labkit/labkit": Path(labkit.__file__).parent, "data": None}


def image_specs() -> tuple[ImageSpec, ...]:
    from labkit import __version__

    def tag(name: str, version: str) -> str:
        return f"{pin('compose_images')['prefix']}/{name}:{version}"

    return (
        ImageSpec("versitygw", tag("versitygw", pin("versitygw")["version"]),
                  lambda ctx: {"usr/local/bin/versitygw": _target(ctx, "storage") / "versitygw"}),
        ImageSpec("mailpit", tag("mailpit", pin("mailpit")["version"]),
                  lambda ctx: {"mailpit": _target(ctx, "mail") / "mailpit"}),
        ImageSpec("toxiproxy", tag("toxiproxy", pin("toxiproxy")["version"]),
                  lambda ctx: {"usr/local/bin/toxiproxy-server": _target(ctx, "toxiproxy") / "toxiproxy-server"}),
        ImageSpec("kafka", tag("kafka", pin("kafka")["version"]),
                  lambda ctx: {"opt/kafka/lib": _target(ctx, "kafka") / "lib",
                               "opt/kafka/log4j.properties": STACK_DIR / "kafka" / "log4j.properties",
                               **_own("kafka", "kafka-start", "CreateTopics.java", under="opt/kafka")}),
        ImageSpec("nodered", tag("nodered", pin("nodered")["version"]), _nodered_sources),
        ImageSpec("faas", tag("faas", __version__), _faas_sources),
    )


def _files(path: Path) -> list[Path]:
    if path.is_file() or path.is_symlink():
        return [path]
    return sorted(p for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts)


def _with_common(sources: dict[str, Path | None]) -> dict[str, Path | None]:
    return {**sources, "usr/local/bin/http-ok": HTTP_OK}


def sources_digest(spec: ImageSpec, sources: dict[str, Path | None]) -> str:
    """A digest of everything the image is built from: its Dockerfile, and each source's files
    (name, size, modification time: the install steps write a new directory for new content)."""
    h = hashlib.sha256((IMAGES_DIR / spec.name / "Dockerfile").read_bytes())
    for entry, source in sorted(_with_common(sources).items()):
        h.update(entry.encode())
        for f in _files(source) if source is not None else []:
            st = f.lstat()
            h.update(f"{f.relative_to(source) if f != source else ''}:{st.st_size}:{st.st_mtime_ns}".encode())
    if spec.name == "faas":
        h.update(_constraints().encode() + ACTION_REQUIREMENTS.read_bytes())
    return h.hexdigest()[:16]


def _constraints() -> str:
    """Every distribution of the environment labkit runs in, at its version (not labkit)."""
    lines = {f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()
             if d.metadata["Name"] and d.metadata["Name"].lower() != "labkit"}
    return "".join(f"{line}\n" for line in sorted(lines))


def _stage(spec: ImageSpec, sources: dict[str, Path | None], context: Path) -> None:
    shutil.rmtree(context, ignore_errors=True)
    rootfs = context / "rootfs"
    rootfs.mkdir(parents=True)
    shutil.copy2(IMAGES_DIR / spec.name / "Dockerfile", context / "Dockerfile")
    for entry, source in _with_common(sources).items():
        dest = rootfs / entry
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            dest.mkdir()
            dest.chmod(0o1777)
        elif source.is_dir():
            shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"),
                            copy_function=_link_or_copy)
        else:
            _link_or_copy(source, dest)
    if spec.name == "faas":
        _stage_wheels(rootfs / "opt" / "labkit")


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stage_wheels(where: Path) -> None:
    """The runner's requirements, their constraints, and their wheels, fetched by this
    machine's pip (with its index and certificates), so the build itself needs no index."""
    (where / "constraints.txt").write_text(_constraints())
    requirements = where / "requirements.txt"
    requirements.write_text("".join(f"{r}\n" for r in FAAS_REQUIREMENTS) + ACTION_REQUIREMENTS.read_text())
    got = _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d",
                str(where / "wheels"), "-r", str(requirements), "-c", str(where / "constraints.txt")],
               timeout=1800)
    if got.returncode != 0:
        raise ServiceError(f"Fetching the FaaS runner's wheels failed:\n{_tail(got)}")


def image_sources_label(env: dict[str, str], ref: str) -> str | None:
    got = _run(["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{SOURCES_LABEL}"}}}}', ref],
               env, timeout=60)
    return got.stdout.decode().strip() if got.returncode == 0 else None


def ensure_images(ctx, reporter: Reporter = QUIET, env: dict[str, str] | None = None) -> list[str]:
    """Build every image of ``stack/compose.yaml`` whose sources changed; return those built.

    Runs ``labkit install``'s steps first (a no-op when the cache holds them). ``env`` is the
    docker CLI's environment (default: this process's, e.g. DOCKER_HOST from :meth:`Engine.env`).

    Raises:
        LabConfigError: a tool is missing.
        ServiceError: a build failed (its log's tail is shown).
    """
    from labkit.stack.backends.native import NativeBackend

    install(NativeBackend(ctx, reporter).install_steps(), ctx.config.cache_dir, reporter)
    specs = image_specs()
    staged = {s.name: s.sources(ctx) for s in specs}
    env = dict(os.environ if env is None else env)
    todo = [(s, d) for s in specs if image_sources_label(env, s.tag) != (d := sources_digest(s, staged[s.name]))]
    if not todo:
        return []
    workdir = Path(ctx.config.cache_dir).absolute() / DOCKER_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_base(env, workdir, reporter)
    built = []
    for spec, digest in todo:
        context = workdir / "contexts" / spec.name
        with reporter.step(f"build {spec.tag}"):
            _stage(spec, staged[spec.name], context)
            # The classic builder; apt inside a build reaches Debian's mirror over the host's network.
            result = _run(["docker", "build", "--network", "host", "--label", f"{SOURCES_LABEL}={digest}",
                           "-t", spec.tag, str(context)], {**env, "DOCKER_BUILDKIT": "0"},
                          timeout=3600)
            shutil.rmtree(context, ignore_errors=True)
            if result.returncode != 0:
                raise ServiceError(f"Building {spec.tag} failed:\n{_tail(result, 25)}")
        built.append(spec.tag)
    _run(["docker", "image", "prune", "--force"], env, timeout=600)  # the replaced ones
    return built
