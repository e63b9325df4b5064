"""Two installs of one cache entry at the same time (two checkouts' `make test` on one machine
share the per-user cache): the entry is built once, and both installs find it intact."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from labkit.core.progress import Reporter
from labkit.stack.install import InstallStep, check_entry, install

BUILDS: list[str] = []
BUILDING = threading.Event()
RELEASE = threading.Event()


@dataclass(frozen=True)
class SlowStep(InstallStep):
    """An entry whose build holds until the test lets it finish."""

    def build(self, into: Path, log: Path) -> None:
        BUILDS.append(into.name)
        BUILDING.set()
        assert RELEASE.wait(60), "the test never released the build"
        (into / "bin").write_text("built\n")

    def key_files(self, into: Path) -> list[Path]:
        return [into / "bin"]


def test_a_second_install_waits_for_the_first_and_finds_its_entry(tmp_path: Path) -> None:
    step, quiet = SlowStep("slow", "1.0"), Reporter(quiet=True)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            install([step], tmp_path, quiet)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    first = threading.Thread(target=run, name="first")
    first.start()
    assert BUILDING.wait(60)
    second = threading.Thread(target=run, name="second")
    second.start()
    # Without the lock the second install starts its own build of the half-built entry.
    second.join(timeout=1.0)
    RELEASE.set()
    first.join(60)
    second.join(60)
    assert errors == []
    assert len(BUILDS) == 1, BUILDS
    assert check_entry(step, tmp_path) is None
