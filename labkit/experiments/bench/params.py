"""What one benchmark run does (:class:`BenchParams`), checked when it is made, and its images."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabConfigError
from labkit.pipeline.images import PoolImage, generate_pool

BENCH_SIZE = (1920, 1080)
MAX_EDGE, QUALITY, MAX_PIXELS = 640, 85, 50_000_000  # the action's defaults


def positive_int(name: str, value: Any, low: int = 1, high: int = 100_000) -> None:
    """Refuse ``value`` unless it is an integer in ``low..high``.

    Raises:
        LabConfigError: It is not; the message names the option to fix.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}. "
                             f"Fix: pass e.g. --{name.replace('_', '-')} {max(low, 10)}.")


@dataclass(frozen=True)
class BenchParams:
    """What one benchmark run does; every bound is checked when it is made.

    Attributes:
        rates: Open-loop arrival rates, images per second (each in (0, 500]).
        images_per_rate: Images sent at each rate.
        saturation_images: Images in the closed-loop burst.
        saturation_concurrency: Uploaders of the burst.
        bare_images: Resize calls of the bare loop.
        processes: Processes of the bare loop; default one per core.
        pool_size: Distinct images generated (runs cycle through them).
        warmup_images: Sent and waited for before anything is measured (0: none).
        max_inflight: The flow's bound on events in flight (``stand_up(max_inflight=)``).
        seed: Seeds the images and the arrival times.

    Raises:
        LabConfigError: A value out of its bounds (the message names the option to fix).
    """

    rates: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    images_per_rate: int = 100
    saturation_images: int = 200
    saturation_concurrency: int = 16
    bare_images: int = 300
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    pool_size: int = 20
    warmup_images: int = 8
    max_inflight: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", tuple(self.rates))
        if not self.rates:
            raise LabConfigError("rates is empty. Fix: pass at least one rate, e.g. --rates 5,10.")
        for rate in self.rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 500:
                raise LabConfigError(f"each rate must be a number in (0, 500] images/s, got {rate!r}. "
                                     "Fix: pass e.g. --rates 5,10,20,40.")
        for name in ("images_per_rate", "saturation_images", "bare_images", "pool_size"):
            positive_int(name, getattr(self, name))
        positive_int("saturation_concurrency", self.saturation_concurrency, high=64)
        positive_int("processes", self.processes, high=256)
        positive_int("warmup_images", self.warmup_images, low=0, high=1000)
        positive_int("max_inflight", self.max_inflight, high=256)
        positive_int("seed", self.seed, low=0, high=2**31)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchParams:
        """Tiny parameters for CI and smoke tests (about half a minute)."""
        small = dict(rates=(5.0, 10.0), images_per_rate=6, saturation_images=12, saturation_concurrency=4,
                     bare_images=16, pool_size=4, warmup_images=2)
        return cls(**{**small, **overrides})


def parse_rates(text: str) -> tuple[float, ...]:
    """``"5,10,20"`` -> ``(5.0, 10.0, 20.0)``.

    Raises:
        LabConfigError: A part is not a number.
    """
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise LabConfigError(f"--rates must be numbers separated by commas, got {text!r}. "
                             "Fix: e.g. --rates 5,10,20,40.") from err


def bench_images(n: int, seed: int = 0) -> list[PoolImage]:
    """``n`` photo-like 1080p JPEGs (a fifth of them portrait), the same for the bare loop and the pipeline."""
    return generate_pool(n, seed=seed, sizes=[BENCH_SIZE], mix={"jpeg": 1.0})
