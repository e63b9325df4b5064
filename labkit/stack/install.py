"""``labkit install``: build or fetch each service into a per-user cache, idempotently.

Each entry is built into ``<name>-<version>.partial`` and renamed into place only
when complete, with a manifest of checksums, so an interrupted install never
looks installed and a damaged one is detected before it is started.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labkit.core.files import locked
from labkit.core.progress import Reporter
from labkit.errors import LabConfigError
from labkit.stack.gomod import GoPatch, copy_writable, go_module_dir

MANIFEST = ".labkit-manifest.json"

TOOL_HINTS = {
    "go": "install Go 1.22 or newer (Debian: apt-get install golang-go; or `conda env create -f environment.yml`)",
    "mvn": "install Maven (Debian: apt-get install maven; or use environment.yml)",
    "java": "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless; or use environment.yml)",
    "npm": "install Node.js 20 with npm (or use environment.yml)",
    "node": "install Node.js 20 (or use environment.yml)",
}


def require_tools(tools: set[str], purpose: str) -> None:
    """Raise one clear error naming every missing toolchain command.

    Raises:
        LabConfigError: a command is not on PATH.
    """
    missing = sorted(t for t in tools if shutil.which(t) is None)
    if missing:
        fixes = "; ".join(f"`{t}`: {TOOL_HINTS.get(t, 'install it')}" for t in missing)
        raise LabConfigError(f"Missing toolchain for {purpose}: {', '.join(missing)} not found on PATH. Fix: {fixes}.")


@dataclass(frozen=True)
class InstallStep(ABC):
    """One cache entry: what it needs, how to build it, which files prove it intact."""

    name: str
    version: str

    tools: tuple[str, ...] = ()

    def target(self, cache: Path) -> Path:
        return cache / f"{self.name}-{self.version}"

    @abstractmethod
    def build(self, into: Path, log: Path) -> None:
        """Build the entry into the empty directory ``into``."""

    @abstractmethod
    def key_files(self, into: Path) -> list[Path]:
        """The files whose size and checksum prove the entry intact."""

    def describe(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class GoBinary(InstallStep):
    """A Go program, built with ``go install package@version``, or with a patched dependency.

    With a ``patch``, the pinned ``module`` (the one holding ``package``) is built from a copy
    whose go.mod replaces the patched dependency with a patched copy: the same build list as
    ``go install package@version``, one file changed.
    """

    package: str = ""
    binary: str = ""
    module: str = ""
    patch: GoPatch | None = None
    tools: tuple[str, ...] = ("go",)

    def target(self, cache: Path) -> Path:
        # A new directory for each patch, so an entry built without it (or with another) is never reused.
        base = super().target(cache)
        return base.with_name(f"{base.name}-patched-{self.patch.digest()}") if self.patch else base

    def describe(self) -> str:
        extra = f" (patched {self.patch.module} {self.patch.version})" if self.patch else ""
        return super().describe() + extra

    def build(self, into: Path, log: Path) -> None:
        if self.patch:
            self._build_patched(into, log)
            return
        gobin = into / "gobin"
        run_logged(["go", "install", f"{self.package}@{self.version}"], log, env={"GOBIN": str(gobin)})
        built = next(gobin.iterdir())  # the file is named after the package's last path element
        built.rename(into / self.binary)
        gobin.rmdir()

    def patched_sources(self, src: Path, log: Path) -> Path:
        """Lay out the main module and the patched dependency under ``src``; return the main module.

        Raises:
            LabConfigError: the patch does not fit the pinned sources.
        """
        main, dep = src / "main", src / "patched"
        copy_writable(go_module_dir(self.module, self.version), main)
        self.patch.check_required(main)
        self.patch.apply(go_module_dir(self.patch.module, self.patch.version), dep)
        with log.open("a") as out:
            out.write(f"# {self.patch.module} {self.patch.version} {self.patch.file}: "
                      f"{self.patch.old!r} -> {self.patch.new!r}\n")
        # A relative path: the binary's build info then names no temporary directory.
        run_logged(["go", "mod", "edit", f"-replace={self.patch.module}=../patched"], log, cwd=main)
        return main

    def _build_patched(self, into: Path, log: Path) -> None:
        src = into / "src"
        main = self.patched_sources(src, log)
        relative = "." + self.package.removeprefix(self.module)
        # -trimpath: no path of this temporary build in the binary; GOWORK=off: no workspace of the user's.
        run_logged(["go", "build", "-trimpath", "-buildvcs=false", "-o", str(into / self.binary), relative],
                   log, cwd=main, env={"GOWORK": "off"})
        shutil.rmtree(src)

    def key_files(self, into: Path) -> list[Path]:
        return [into / self.binary]


@dataclass(frozen=True)
class GoWithWebAssets(InstallStep):
    """A Go program whose web UI is embedded at build time (``//go:embed``) from assets built with npm.

    ``go install`` builds from the module zip, which holds the UI's sources but not the
    built assets, so its UI has none and its version reads "dev". This step builds the
    pinned module's own sources: the assets with ``npm ci`` and the ``build`` script (the
    dependencies from ``npm_files``, a folder with a package.json and its lock), then the
    binary, stamped with ``-X version_var=module_version``.
    """

    package: str = ""
    module_version: str = ""
    binary: str = ""
    version_var: str = ""
    npm_files: Path = Path()
    tools: tuple[str, ...] = ("go", "npm", "node")

    def build(self, into: Path, log: Path) -> None:
        src = into / "src"
        copy_writable(go_module_dir(self.package, self.module_version), src)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(self.npm_files / name, src / name)
        npm = ["--no-audit", "--no-fund", "--loglevel=error"]
        run_logged(["npm", "ci", "--legacy-peer-deps", *npm], log, cwd=src)
        run_logged(["npm", "run", "build", "--loglevel=error"], log, cwd=src)
        ldflags = f"-s -w -X {self.version_var}={self.module_version}"
        run_logged(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(into / self.binary), "."],
                   log, cwd=src, env={"CGO_ENABLED": "0"})
        shutil.rmtree(src)  # node_modules alone is a few hundred MB

    def key_files(self, into: Path) -> list[Path]:
        return [into / self.binary]


@dataclass(frozen=True)
class MavenJars(InstallStep):
    """A JVM program as a folder of jars, resolved from Maven Central with their dependencies."""

    artifacts: tuple[str, ...] = ()
    tools: tuple[str, ...] = ("mvn", "java")

    def build(self, into: Path, log: Path) -> None:
        (into / "pom.xml").write_text(_pom(self.artifacts))
        run_logged(["mvn", "-B", "-q", "-f", str(into / "pom.xml"),
                    "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                    f"-DoutputDirectory={into / 'lib'}", "-DincludeScope=runtime"], log)

    def key_files(self, into: Path) -> list[Path]:
        return sorted((into / "lib").glob("*.jar"))


@dataclass(frozen=True)
class NpmPackage(InstallStep):
    """A Node.js package folder installed with ``npm ci`` from a lock file."""

    source: Path = Path()
    entry: str = ""
    tools: tuple[str, ...] = ("npm", "node")

    def build(self, into: Path, log: Path) -> None:
        for item in self.source.iterdir():
            if item.name in ("package.json", "package-lock.json", "nodes"):
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, into / item.name)
        run_logged(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], log, cwd=into)

    def key_files(self, into: Path) -> list[Path]:
        return [into / "package-lock.json", into / self.entry]


def _pom(artifacts: tuple[str, ...]) -> str:
    deps = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *coords.split(":")) for coords in artifacts)
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>labkit</groupId><artifactId>service-jars</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>\n")


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a build command with its output in ``log``.

    Raises:
        LabConfigError: the command failed; the message carries the log's tail.
    """
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        with log.open(errors="replace") as f:
            tail = "".join(deque(f, maxlen=15))
        raise LabConfigError(
            f"`{' '.join(cmd[:3])}` failed (exit {result.returncode}). Last lines of {log}:\n{tail}"
            "Hint: check that the package registries are reachable, then run `labkit install` again.")


# -- the cache ---------------------------------------------------------------

def _digest(path: Path) -> list:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return [path.stat().st_size, h.hexdigest()]


def write_manifest(step: InstallStep, into: Path) -> None:
    files = {str(p.relative_to(into)): _digest(p) for p in step.key_files(into)}
    if not files:
        raise LabConfigError(f"Installing {step.describe()} produced none of its files; see the install log.")
    (into / MANIFEST).write_text(json.dumps({"name": step.name, "version": step.version, "files": files}))


def check_entry(step: InstallStep, cache: Path) -> str | None:
    """Return None when the entry is intact, else what is wrong with it."""
    into = step.target(cache)
    manifest = into / MANIFEST
    if not manifest.exists():
        return "not installed"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return f"its manifest {manifest} is unreadable"
    for rel, expected in files.items():
        path = into / rel
        if not path.is_file():
            return f"{path} is missing"
        if _digest(path) != expected:
            return f"{path} does not match its recorded checksum"
    return None


def verify_cache(steps: list[InstallStep], cache: Path) -> None:
    """Check every entry before anything is started.

    Raises:
        LabConfigError: an entry is missing or damaged; the fix is ``labkit install``.
    """
    problems = [(s, check_entry(s, cache)) for s in steps]
    bad = [(s, p) for s, p in problems if p]
    if not bad:
        return
    if all(p == "not installed" for _, p in bad):
        names = ", ".join(s.describe() for s, _ in bad)
        raise LabConfigError(f"Not installed yet: {names}. Fix: run `labkit install` first.")
    detail = "; ".join(f"{s.describe()}: {p}" for s, p in bad)
    raise LabConfigError(
        f"The service cache at {cache} is corrupt ({detail}). Fix: run `labkit install`, which rebuilds damaged entries.")


def install(steps: list[InstallStep], cache: Path, reporter: Reporter, force: bool = False) -> None:
    """Install every step not already intact in ``cache`` (all of them with ``force``)."""
    todo = [s for s in steps if force or check_entry(s, cache) is not None]
    for s in steps:
        if s not in todo:
            reporter.note(f"{s.describe()}: cached")
    if not todo:
        return
    require_tools({t for s in todo for t in s.tools}, "`labkit install`")
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    with reporter.session(), ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(_install_one, s, cache, reporter, force) for s in todo]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def _install_one(step: InstallStep, cache: Path, reporter: Reporter, force: bool = False) -> None:
    """Build one entry, one process at a time: two installs on one machine (two checkouts'
    ``make test``, say) share the per-user cache, and the second finds the first one's entry.

    Raises:
        LabConfigError: the build failed, or the cache could not be written.
    """
    with locked(cache / "locks" / f"{step.name}.lock"):
        if force or check_entry(step, cache) is not None:
            _build_entry(step, cache, reporter)
        else:
            reporter.note(f"{step.describe()}: cached (built meanwhile by another install)")


def _build_entry(step: InstallStep, cache: Path, reporter: Reporter) -> None:
    target = step.target(cache)
    partial = target.with_name(target.name + ".partial")
    log = cache / "logs" / f"{step.name}.log"
    log.unlink(missing_ok=True)
    with reporter.step(f"install {step.describe()}"):
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            step.build(partial, log)
            write_manifest(step, partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        except (OSError, StopIteration) as e:  # StopIteration: a Go build that left no binary
            raise LabConfigError(f"Installing {step.describe()} into {cache} failed: {e!r}. Hint: check that the "
                                 f"disk has room and {log} for the build's output, then run `labkit install`.") from e
