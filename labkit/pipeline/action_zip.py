"""The resize action as OpenWhisk's Python runtime takes a binary action: one zip, built once.

The zip holds ``__main__.py`` (``stack/actions/resize.py`` unchanged) and ``virtualenv/`` with the
libraries pinned in ``stack/actions/requirements.txt``, installed by pip from PyPI as wheels for
the runtime's platform (``python:3.11``, Linux x86-64 by default), so the same file deploys to a
real OpenWhisk (``wsk action update resize resize.zip --kind python:3.11``, see
``docs/openwhisk.md``) and to the lab's runner.

The virtualenv is made by the standard library's ``venv`` and given the ``bin/activate_this.py``
that OpenWhisk's launcher executes (``venv`` does not write one; it is virtualenv's script).
Its interpreter links and shell activation scripts are left out of the zip: the runtime brings
its own interpreter, and its launcher needs ``activate_this.py`` only.

A built zip is kept in the lab's cache (``LABKIT_CACHE_DIR``, ``actions/``) under a name derived
from everything that goes into it, so it is built once; the entries are sorted and dated
1980-01-01, so equal inputs give equal bytes.

Example:
    >>> path = build_action_zip(cache_dir)          # doctest: +SKIP
    >>> zip_layout(path.read_bytes())["entry"]      # doctest: +SKIP
    '__main__.py'
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

from labkit.core.files import atomic_write, locked
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.versions import STACK_DIR

__all__ = ["ACTION_SOURCE", "REQUIREMENTS", "ZipBuild", "build_action_zip", "copy_zip", "zip_layout"]

ACTION_SOURCE = STACK_DIR / "actions" / "resize.py"
REQUIREMENTS = STACK_DIR / "actions" / "requirements.txt"
PYTHON_VERSION = "3.11"  # the runtime kind python:3.11
GLIBC_MINOR, ARCH = 28, "x86_64"  # wheels for glibc 2.28 and older run in the runtime image (Debian, glibc 2.36)
# pip takes exactly the platform tags it is given, so every older manylinux tag is named too.
PLATFORM = (tuple(f"manylinux_2_{n}_{ARCH}" for n in range(GLIBC_MINOR, 4, -1))
            + tuple(f"{alias}_{ARCH}" for alias in ("manylinux2014", "manylinux2010", "manylinux1")))
SITE_PACKAGES = f"virtualenv/lib/python{PYTHON_VERSION}/site-packages"
FORMAT = "1"  # bump when the layout below changes, so cached zips of the old layout are not reused
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PIP_TIMEOUT_S = 600.0

# virtualenv's activate_this.py, reduced to what OpenWhisk's launcher relies on: the venv's
# site-packages first on sys.path, and VIRTUAL_ENV and PATH as `activate` sets them.
ACTIVATE_THIS = f'''"""Activate this virtualenv in the running interpreter: exec(open(this).read(), {{"__file__": this}})."""
import os
import site
import sys

bin_dir = os.path.dirname(os.path.abspath(__file__))
base = os.path.dirname(bin_dir)
os.environ["PATH"] = os.pathsep.join([bin_dir, *os.environ.get("PATH", "").split(os.pathsep)])
os.environ["VIRTUAL_ENV"] = base
prev_length = len(sys.path)
site.addsitedir(os.path.join(base, "lib", "python{PYTHON_VERSION}", "site-packages"))
sys.path[:] = sys.path[prev_length:] + sys.path[0:prev_length]
sys.real_prefix = sys.prefix
sys.prefix = base
'''


@dataclass(frozen=True)
class ZipBuild:
    """What goes into one zip; its :attr:`key` names the cached file."""

    source: bytes
    requirements: bytes
    platform: tuple[str, ...] = PLATFORM

    @classmethod
    def of(cls, source: Path = ACTION_SOURCE, requirements: Path = REQUIREMENTS,
           platform: tuple[str, ...] = PLATFORM) -> ZipBuild:
        """The build of ``source`` with the libraries pinned in ``requirements``.

        Raises:
            LabConfigError: A file is missing.
        """
        try:
            return cls(source.read_bytes(), requirements.read_bytes(), platform)
        except OSError as e:
            raise LabConfigError(f"cannot read the action's files: {e}. Fix: pass an existing action source "
                                 "and requirements file.") from e

    @property
    def key(self) -> str:
        """A digest of the inputs: the source, the pins, the platform, the Python and the layout."""
        digest = hashlib.sha256()
        for part in (FORMAT.encode(), PYTHON_VERSION.encode(), " ".join(self.platform).encode(), self.requirements,
                     self.source):
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()[:20]


def build_action_zip(cache_dir: Path, build: ZipBuild | None = None, force: bool = False) -> Path:
    """The path of the action's zip in the cache, built first when it is not there (or ``force``).

    Concurrent callers wait on one lock, so the zip is built once.

    Args:
        cache_dir: The lab's cache directory (``lab.ctx.config.cache_dir``).
        build: What to build; default the resize action with its pinned requirements.
        force: Build again even when the cache has it.

    Raises:
        LabConfigError: The action's files are missing, or pip could not install the pins
            (a wrong pin, no wheel for the platform, PyPI unreachable); the message has pip's last lines.
    """
    build = build or ZipBuild.of()
    target = Path(cache_dir) / "actions" / f"resize-{build.key}.zip"
    with locked(target.with_suffix(".lock")):
        if force or not target.is_file():
            atomic_write(target, _build_bytes(build), mode=0o644)
    return target


def _build_bytes(build: ZipBuild) -> bytes:
    with tempfile.TemporaryDirectory(prefix="labkit-action-zip-") as tmp:
        root = Path(tmp)
        (root / "__main__.py").write_bytes(build.source)
        _make_virtualenv(root / "virtualenv", build)
        return _zip_tree(root)


def _make_virtualenv(path: Path, build: ZipBuild) -> None:
    """A venv whose site-packages holds the pinned libraries for ``build.platform``."""
    venv.create(path, with_pip=False, symlinks=True)
    for script in (path / "bin").glob("[Aa]ctivate*"):  # the shell scripts name this build's temp dir
        script.unlink()
    (path / "bin" / "activate_this.py").write_text(ACTIVATE_THIS)
    # As in the runtime image, where the interpreter is /usr/local/bin/python3.11.
    (path / "pyvenv.cfg").write_text(f"home = /usr/local/bin\ninclude-system-site-packages = false\n"
                                     f"version = {PYTHON_VERSION}\n")
    requirements = path.parent / "requirements.txt"
    requirements.write_bytes(build.requirements)
    site = path.parent / SITE_PACKAGES
    site.mkdir(parents=True, exist_ok=True)  # a host other than 3.11 names its own lib dir
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
               "--only-binary=:all:", *(f"--platform={tag}" for tag in build.platform),
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--target", str(site),
               "-r", str(requirements)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                       env={**os.environ, "PIP_NO_INPUT": "1"})
    except subprocess.CalledProcessError as e:
        tail = " | ".join((e.stderr or e.stdout or "").strip().splitlines()[-3:])
        raise LabConfigError(f"pip could not install the action's requirements for {build.platform[0]}: {tail}. "
                             f"Fix: check the pins in {REQUIREMENTS.name} and that PyPI is reachable.") from e
    except subprocess.TimeoutExpired as e:
        raise ServiceError(f"pip did not finish installing the action's requirements in {PIP_TIMEOUT_S:.0f} s. "
                           "Hint: PyPI may be slow; run again (what pip fetched is cached).") from e
    requirements.unlink()


def _zip_tree(root: Path) -> bytes:
    """``root`` as a zip: regular files only (no links, no bytecode), sorted, with fixed dates."""
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), ZIP_DATE)
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zipped.writestr(info, path.read_bytes())
    return out.getvalue()


def zip_layout(data: bytes) -> dict[str, object]:
    """What a zip holds, as OpenWhisk's launcher sees it.

    Returns:
        ``entry`` (``exec`` or ``__main__.py``, else None), ``activate_this`` (whether
        ``virtualenv/bin/activate_this.py`` is there), ``packages`` (distribution name ->
        version, from the ``*.dist-info`` folders in site-packages) and ``files`` (how many).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        names = zipped.namelist()
    packages = {}
    for name in names:
        folder, _, rest = name.removeprefix(SITE_PACKAGES + "/").partition("/")
        if name.startswith(SITE_PACKAGES + "/") and folder.endswith(".dist-info") and rest == "METADATA":
            dist, _, version = folder.removesuffix(".dist-info").rpartition("-")
            packages[dist.lower().replace("_", "-")] = version
    entry = next((e for e in ("exec", "__main__.py") if e in names), None)
    return {"entry": entry, "activate_this": "virtualenv/bin/activate_this.py" in names, "packages": packages,
            "files": len(names)}


def copy_zip(cache_dir: Path, out: Path, force: bool = False) -> tuple[Path, float]:
    """Build (or take from the cache) the resize action's zip and copy it to ``out``.

    Returns:
        ``out`` and the seconds it took (near zero when the cache had it).

    Raises:
        LabConfigError: ``out`` is a directory or its folder does not exist, or the build failed.
    """
    out = Path(out)
    if out.is_dir() or not out.parent.is_dir():
        raise LabConfigError(f"cannot write the zip to {out}: {'it is a directory' if out.is_dir() else 'no such folder'}"
                             ". Fix: pass --out FILE.zip in an existing folder.")
    started = time.monotonic()
    shutil.copyfile(build_action_zip(cache_dir, force=force), out)
    return out, time.monotonic() - started
