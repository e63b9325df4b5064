"""What a run is: the topologies, the clause, a run's scale, and one topology's run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from labkit.analysis.budget import error_budget
from labkit.errors import LabConfigError

#: A Kafka broker's service name: ``kafka``, ``kafka-2``, ``kafka-3``.
BROKER = re.compile(r"^kafka(-\d+)?$")
#: The probe this experiment judges (see :class:`QuorumProber`).
QUORUM_PROBE = "pipeline (quorum)"
#: The topologies, by name: how many brokers each has.
TOPOLOGIES: dict[str, int] = {"single": 1, "replicated": 3}
#: The clause.
UPTIME_TARGET = 0.999
#: The month the error budget is counted over.
BUDGET_S = error_budget(UPTIME_TARGET, days=30).minutes * 60


@dataclass(frozen=True)
class AvailabilityScale:
    """How big a run is. Times in seconds; each topology runs ``repetitions`` times, ``kills`` faults each."""

    rate_per_s: float
    warmup_s: float  # load before the first kill
    down_s: float  # a killed broker stays down this long
    gap_s: float  # after a recovery, before the next kill
    tail_s: float  # load after the last recovery
    recovery_timeout_s: float  # the longest wait for an image to come through after a broker is back
    kills: int = 2
    repetitions: int = 1

    def max_duration_s(self) -> float:
        """The longest one run's load may last."""
        return self.warmup_s + self.kills * (self.down_s + self.recovery_timeout_s + self.gap_s + 60) + self.tail_s

    def images(self) -> int:
        """The load's image cap: room for Poisson arrivals to run ahead of the mean."""
        return math.ceil(1.5 * self.rate_per_s * self.max_duration_s())


SCALES: dict[str, AvailabilityScale] = {
    # One kill per topology: enough to show the difference and to FAIL one broker on time; the
    # spread of the cost per kill is the full scale's (and docs/reliability.md's).
    "ci": AvailabilityScale(rate_per_s=3, warmup_s=4, down_s=3, gap_s=4, tail_s=4, recovery_timeout_s=60, kills=1),
    "full": AvailabilityScale(rate_per_s=5, warmup_s=10, down_s=5, gap_s=10, tail_s=10, recovery_timeout_s=120,
                              repetitions=3),
}


def scale_of(scale: str | AvailabilityScale | dict) -> AvailabilityScale:
    """A scale by name (``ci``, ``full``), a mapping of its fields, or as it is.

    Raises:
        LabConfigError: an unknown name or field.
    """
    if isinstance(scale, AvailabilityScale):
        return scale
    if isinstance(scale, dict):
        try:
            return AvailabilityScale(**scale)
        except TypeError as e:
            raise LabConfigError(f"bad availability scale {scale}: {e}. Fix: use the fields "
                                 f"{', '.join(AvailabilityScale.__dataclass_fields__)}.") from e
    if scale not in SCALES:
        raise LabConfigError(f"unknown availability scale {scale!r}. Valid: {', '.join(SCALES)}.")
    return SCALES[scale]



@dataclass
class TopologyRun:
    """One run of the schedule on one topology: its images, probes and faults."""

    topology: str
    repetition: int
    results: pd.DataFrame
    probes: pd.DataFrame
    faults: pd.DataFrame  # target, start_ms, end_ms (healthy again), recovered_ms, recovered, waited_s
    audit: dict
    window: tuple[float, float]  # the load's first and last upload start, epoch ms
