"""Go modules for ``labkit install``: a pinned module's sources from the module cache, a writable
copy of them, and a patch of one file of a dependency (declared in ``stack/versions.toml``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabConfigError


def go_module_dir(module: str, version: str) -> Path:
    """The pinned module's sources, from the Go module cache (downloaded through the proxy if absent).

    Raises:
        LabConfigError: the module could not be downloaded.
    """
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, check=False)
    try:
        return Path(json.loads(result.stdout)["Dir"])
    except (ValueError, KeyError) as e:
        raise LabConfigError(f"`go mod download {module}@{version}` failed: {result.stdout}{result.stderr}"
                             "Hint: check that the Go module proxy is reachable, then run `labkit install` again.") from e


def copy_writable(source: Path, dest: Path) -> None:
    """Copy a tree from the read-only module cache, leaving the copy writable by its owner."""
    shutil.copytree(source, dest, symlinks=True)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


@dataclass(frozen=True)
class GoPatch:
    """One text replacement in one file of a Go dependency, applied when a program is built.

    Declared in ``stack/versions.toml`` beside the program's pin (``[versitygw.patch]``). The
    module cache is read-only and ``go -overlay`` refuses to replace files in it, so the
    build uses a patched copy of the module through a ``replace`` directive instead.
    """

    module: str
    version: str
    file: str
    old: str
    new: str

    @classmethod
    def from_pin(cls, entry: dict[str, str] | None) -> GoPatch | None:
        """The patch an entry of ``stack/versions.toml`` declares, or None without one."""
        return cls(**entry) if entry else None

    def digest(self) -> str:
        """A short digest of the declaration, so that a changed patch builds a new cache entry."""
        text = json.dumps([self.module, self.version, self.file, self.old, self.new])
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def mismatch(self, problem: str) -> LabConfigError:
        """The one-line error for a patch that no longer fits the pinned sources."""
        return LabConfigError(f"The patch of {self.module} {self.version} ({self.file}) in stack/versions.toml "
                              f"{problem}: the pin and the patch no longer match. Fix: update the patch "
                              "(or remove it) to fit the pinned version, then run `labkit install`.")

    def check_required(self, main: Path) -> None:
        """Check that the main module at ``main`` requires exactly the version this patch is for.

        Raises:
            LabConfigError: it requires another version, or not the module at all.
        """
        result = subprocess.run(["go", "mod", "edit", "-json"], cwd=main, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise LabConfigError(f"`go mod edit -json` in {main} failed: {result.stderr.strip()}")
        required = {r["Path"]: r["Version"] for r in json.loads(result.stdout).get("Require") or []}
        if required.get(self.module) != self.version:
            raise self.mismatch(f"is for a version the build does not use (it requires "
                                f"{required.get(self.module, 'no such module')})")

    def apply(self, source: Path, dest: Path) -> None:
        """Copy the module at ``source`` to ``dest`` and replace the text in the copy's file.

        Raises:
            LabConfigError: the file is missing, or holds the old text other than exactly once.
        """
        copy_writable(source, dest)
        path = dest / self.file
        if not path.is_file():
            raise self.mismatch("names a file the module does not have")
        text = path.read_text()
        if (found := text.count(self.old)) != 1:
            raise self.mismatch(f"finds its old text {found} times, not once")
        path.write_text(text.replace(self.old, self.new))
