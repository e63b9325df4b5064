"""The replicated topology's lab: a short-lived second lab at a free port offset."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.experiments.availability.model import TOPOLOGIES
from labkit.stack.config import DEFAULT_PORTS, safe_offsets
from labkit.stack.lab import Lab
from labkit.stack.process import port_owner

# ---------------------------------------------------------------- the replicated lab


def scratch_offset(beside: Lab) -> int:
    """A port offset for a second lab: no port in common with ``beside``'s, and every port free.

    Raises:
        LabConfigError: no such offset below the ephemeral range.
    """
    ports = list(DEFAULT_PORTS.values())
    distances = {abs(a - b) for a in ports for b in ports}
    taken = beside.ctx.config.port_offset
    for offset in range(taken + 100, safe_offsets().stop, 100):
        if abs(offset - taken) not in distances and not any(port_owner(p + offset) for p in ports):
            return offset
    raise LabConfigError("no free port offset for the replicated lab. Fix: pass replicated_offset=N "
                         "(a LABKIT_PORT_OFFSET whose ports are free).")


@contextlib.contextmanager
def replicated_lab(port_offset: int, data_dir: str | Path | None = None,
                   reporter: Reporter = QUIET) -> Iterator[Lab]:
    """A short-lived lab with three brokers at ``port_offset``; down, its data wiped, when the block ends
    (a scratch data dir: every service killed at once, no graceful stop).

    Args:
        port_offset: Its ``LABKIT_PORT_OFFSET`` (:func:`scratch_offset` finds a free one).
        data_dir: Its data dir; default a new temporary one, removed afterwards.
        reporter: Reports the up and the down.

    Raises:
        LabConfigError: this labkit has no ``kafka_brokers`` setting, or the ports are taken.
        ServiceError: a service did not start.
    """
    scratch = data_dir is None
    where = Path(tempfile.mkdtemp(prefix="labkit-replicated-")) if scratch else Path(data_dir)
    try:
        lab = Lab.from_env(data_dir=where, port_offset=port_offset, backend="native",
                           kafka_brokers=TOPOLOGIES["replicated"])
    except LabConfigError:
        if scratch:
            shutil.rmtree(where, ignore_errors=True)
        raise
    if getattr(lab.ctx.config, "kafka_brokers", 1) != TOPOLOGIES["replicated"]:
        if scratch:
            shutil.rmtree(where, ignore_errors=True)
        raise LabConfigError("this lab has no replicated topology (no kafka_brokers setting). "
                             "Fix: run the single topology only (topologies=['single']).")
    _LIVE[where] = (lab, scratch)  # a kernel shut down mid-run still takes it down (see _down_at_exit)
    try:
        with reporter.step(f"stand up a lab with 3 brokers at port offset {port_offset}"):
            lab.up()
        yield lab
    finally:
        with reporter.step("take the replicated lab down"):
            _take_down(where)


# The replicated labs standing in this process, by data dir: (lab, whether its data dir is scratch).
_LIVE: dict[Path, tuple[Lab, bool]] = {}


def _take_down(where: Path) -> None:
    """Down (wiped, when scratch) and forget one replicated lab; never raises: the first error is the one to raise."""
    lab, scratch = _LIVE.pop(where, (None, False))
    if lab is not None:
        with contextlib.suppress(Exception):
            if scratch:  # its data goes anyway: no graceful stop (a broker's takes seconds), kill -9 every service
                for service in reversed(list(lab.backend.services)):
                    lab.backend.kill(service)
            lab.down(wipe=scratch)
    if scratch:
        shutil.rmtree(where, ignore_errors=True)


@atexit.register
def _down_at_exit() -> None:
    for where in list(_LIVE):
        _take_down(where)
