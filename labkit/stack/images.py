"""The compose backend's images, one per service, built from the pins.

:func:`ensure_images` builds the images ``stack/compose.yaml`` runs from
``stack/images/<name>/Dockerfile``: each context is staged from what ``labkit install``
builds from ``stack/versions.toml`` for the native backend (the versitygw, Mailpit and
Toxiproxy binaries, Kafka's jars, Node-RED's node_modules, labkit's FaaS runner), so both
backends run the same code. An image is rebuilt only when its sources changed (the
``labkit.sources`` label holds their digest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.docker import DOCKER_DIR, ensure_base, run, tail
from labkit.stack.install import install
from labkit.stack.versions import STACK_DIR, pin

IMAGES_DIR = STACK_DIR / "images"
HTTP_OK = IMAGES_DIR / "http-ok"
SOURCES_LABEL = "labkit.sources"
# What the FaaS runner and the resize action import (their versions: constraints.txt).
FAAS_REQUIREMENTS = ("pydantic", "starlette", "uvicorn", "tenacity", "psutil", "filelock")
ACTION_REQUIREMENTS = STACK_DIR / "actions" / "requirements.txt"
# The parts of labkit the runner imports (python -m labkit.faas; tests/test_compose_static.py checks).
RUNNER_PARTS = ("__init__.py", "errors.py", "core", "faas")


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
    """labkit's runner and what it imports of labkit (so other changes to labkit rebuild nothing)."""
    import labkit

    package = Path(labkit.__file__).parent
    return {**{f"opt/labkit/labkit/{part}": package / part for part in RUNNER_PARTS}, "data": None}


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
    got = run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d",
                str(where / "wheels"), "-r", str(requirements), "-c", str(where / "constraints.txt")],
               timeout=1800)
    if got.returncode != 0:
        raise ServiceError(f"Fetching the FaaS runner's wheels failed:\n{tail(got)}")


def image_sources_label(env: dict[str, str], ref: str) -> str | None:
    got = run(["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{SOURCES_LABEL}"}}}}', ref],
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
            result = run(["docker", "build", "--network", "host", "--label", f"{SOURCES_LABEL}={digest}",
                           "-t", spec.tag, str(context)], {**env, "DOCKER_BUILDKIT": "0"},
                          timeout=3600)
            shutil.rmtree(context, ignore_errors=True)
            if result.returncode != 0:
                raise ServiceError(f"Building {spec.tag} failed:\n{tail(result, 25)}")
        built.append(spec.tag)
    run(["docker", "image", "prune", "--force"], env, timeout=600)  # the replaced ones
    return built
