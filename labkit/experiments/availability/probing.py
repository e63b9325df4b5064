"""What "up" means with several brokers: the quorum probe."""

from __future__ import annotations

import time
from collections.abc import Sequence

from labkit.experiments.availability.model import BROKER, QUORUM_PROBE
from labkit.experiments.prober import PATH_SERVICES, Prober
from labkit.stack.lab import Lab
from labkit.stack.services.kafka import broker_ids, broker_name

# ---------------------------------------------------------------- probing


def brokers_of(services: Sequence[str]) -> list[str]:
    """The broker services among ``services``, in order (``kafka``, ``kafka-2``, ...)."""
    return sorted((s for s in services if BROKER.match(s)), key=lambda s: (len(s), s))


def quorum_up(health: dict[str, bool], upload_answers: bool) -> bool:
    """The pipeline is up: the upload endpoint answers, every non-broker service on the path is
    ready, and a majority of the brokers is."""
    brokers = brokers_of(list(health))
    others = all(health.get(s, False) for s in PATH_SERVICES if not BROKER.match(s))
    majority = sum(health[b] for b in brokers) >= len(brokers) // 2 + 1
    return upload_answers and others and majority


def lab_brokers(lab: Lab) -> list[str]:
    """The lab's broker services: ``kafka``, and ``kafka-2``, ``kafka-3`` in the replicated topology."""
    return [broker_name(n) for n in broker_ids(lab.ctx.config)]


class QuorumProber(Prober):
    """The lab's prober, plus every broker's readiness and the ``pipeline (quorum)`` probe (:func:`quorum_up`).

    A round is stamped when it has looked, not when it was scheduled: on a busy machine a round
    waits in the pool and its probes take seconds, and a stamp from before a kill on a probe that
    saw the broker gone would put the outage before its fault.
    """

    def _services(self) -> dict[str, bool]:
        health = super()._services()
        if hasattr(self.lab.backend, "service"):  # the lab's prober probes broker 1 only
            health |= {name: bool(self.lab.backend.service(name).readiness().probe())
                       for name in lab_brokers(self.lab) if name not in health}
        return health

    def _round(self, t_ms: int) -> None:
        health = self._services()
        answers = self._upload_answers()
        t_ms = round(time.time() * 1000)
        pipeline_ok = answers and all(health.get(s, False) for s in PATH_SERVICES)
        rows = [{"t_ms": t_ms, "service": s, "ok": ok} for s, ok in health.items()]
        rows += [{"t_ms": t_ms, "service": "pipeline", "ok": pipeline_ok},
                 {"t_ms": t_ms, "service": QUORUM_PROBE, "ok": quorum_up(health, answers)}]
        with self._lock:
            self._rows += rows
