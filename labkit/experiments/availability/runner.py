"""The schedule on each topology: kill a broker, let it recover, kill the next; then settle and audit."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.core.progress import QUIET, Reporter, bar
from labkit.core.runs import new_run_dir, run_id
from labkit.errors import LabConfigError
from labkit.experiments.availability.analysis import (
    latency_effect,
    per_fault,
    uptime_verdicts,
)
from labkit.experiments.availability.labs import replicated_lab, scratch_offset
from labkit.experiments.availability.model import (
    TOPOLOGIES,
    AvailabilityScale,
    TopologyRun,
    scale_of,
)
from labkit.experiments.availability.probing import QuorumProber, lab_brokers
from labkit.experiments.faults import Fault, FaultInjector
from labkit.experiments.load import LoadRun, now_ms, start_open_loop
from labkit.experiments.runs import lab_metadata
from labkit.experiments.settle import POLL_INTERVAL_S, settle
from labkit.experiments.spec import load_spec
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.audit import audit
from labkit.pipeline.fate import Fate
from labkit.pipeline.metrics import lab_metrics
from labkit.stack.lab import Lab

# ---------------------------------------------------------------- one run


def kill_order(brokers: Sequence[str], kills: int, repetition: int) -> list[str]:
    """Which broker each kill hits: the brokers in turn, each repetition starting one further on."""
    return [brokers[(repetition * kills + i) % len(brokers)] for i in range(kills)]


def first_through(lab: Lab, load: LoadRun, since_ms: float, timeout_s: float) -> float | None:
    """When the first image uploaded at ``since_ms`` or later came through (its ``t_done``), waiting
    at most ``timeout_s``; None when none did."""
    def look() -> float | None:
        sent = load.results()
        after = set(sent.loc[(sent["t_upload_start"] >= since_ms) & (sent["status_code"] == 200), "key"])
        lines = lab_metrics(lab)
        done = lines.loc[lines["key"].isin(after) & (lines["outcome"] == "ok"), "t_done"]
        return float(done.min()) if len(done) else None

    try:
        return Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(POLL_INTERVAL_S * 2),
                        retry=retry_if_result(lambda t: t is None))(look)
    except RetryError:
        return None


def kill_and_recover(lab: Lab, injector: FaultInjector, load: LoadRun, broker: str,
                     scale: AvailabilityScale) -> dict:
    """``kill -9`` one broker, start it again after ``down_s`` (and wait until it is healthy), then
    wait until an image sent after that has come through. One row of the faults table."""
    fault = Fault("kill", broker, duration_s=scale.down_s)
    start = now_ms()
    injector.inject(fault)
    try:
        time.sleep(scale.down_s)  # the fault's planned length, not a wait for an event
    finally:
        injector.clear(fault)  # starts it again and waits until it is healthy
    end = now_ms()
    recovered = first_through(lab, load, end, scale.recovery_timeout_s)
    return {"target": broker, "start_ms": start, "end_ms": end, "recovered_ms": recovered,
            "recovered": recovered is not None, "waited_s": round((now_ms() - end) / 1000, 2)}


def run_topology(lab: Lab, topology: str, scale: AvailabilityScale, repetition: int, seed: int,
                 stamp: str, tick=lambda: None) -> TopologyRun:
    """The schedule on one lab: stand the pipeline up, load, kill in turn, settle, audit."""
    prefix = f"avail/{stamp}/{topology}/r{repetition}/"
    spec = load_spec({"name": f"availability-{topology}", "fault_label": "kill brokers in turn",
                      "load": {"kind": "open", "rate_per_s": scale.rate_per_s, "images": scale.images(),
                               "max_duration_s": scale.max_duration_s(), "sizes": [[640, 480]]},
                      "retry": "exponential", "reconcile": True, "seed": seed, "drain_timeout_s": 180})
    pipeline.stand_up(lab, retry=spec.retry)
    injector = FaultInjector(lab)
    with QuorumProber(lab) as prober:
        load = start_open_loop(lab, scale.rate_per_s, scale.images(), scale.max_duration_s(), seed=seed,
                               prefix=prefix, sizes=[(640, 480)], progress=False)
        rows = []
        try:
            brokers = lab_brokers(lab)
            # The load runs past the schedule (max_duration_s allows for every wait), so these are
            # the schedule's own pauses, not waits for an event.
            time.sleep(scale.warmup_s)
            for broker in kill_order(brokers, scale.kills, repetition):
                rows.append(kill_and_recover(lab, injector, load, broker, scale) | {"fault": len(rows)})
                tick()
                time.sleep(scale.gap_s if len(rows) < scale.kills else scale.tail_s)
        finally:
            load.stop()
            table = load.wait()
            with contextlib.suppress(Exception):  # the first error is the one to raise
                injector.clear_all()
    results, _ = settle(lab, spec, table, prefix, repetition, seed, fault="kill brokers in turn")
    checked = audit(lab, prefix=prefix, grace_s=0)
    faults = pd.DataFrame(rows, columns=["fault", "target", "start_ms", "end_ms", "recovered_ms", "recovered",
                                         "waited_s"])
    sent = table["t_upload_start"]
    return TopologyRun(topology, repetition, results.assign(topology=topology), prober.table(),
                       faults.assign(topology=topology, repetition=repetition),
                       dict(checked.counts),
                       (float(sent.min()), float(sent.max())) if len(sent) else (math.nan, math.nan))


# ---------------------------------------------------------------- both topologies


@dataclass
class AvailabilityRun:
    """Both topologies' runs, and the tables made from them (saved in ``run_dir``)."""

    run_dir: Path
    scale: AvailabilityScale
    runs: list[TopologyRun]
    env: dict = field(default_factory=dict)

    @property
    def results(self) -> pd.DataFrame:
        return pd.concat([r.results.assign(repetition=r.repetition) for r in self.runs], ignore_index=True)

    @property
    def probes(self) -> pd.DataFrame:
        return pd.concat([r.probes.assign(topology=r.topology, repetition=r.repetition) for r in self.runs],
                         ignore_index=True)

    @property
    def faults(self) -> pd.DataFrame:
        """One row per fault: :func:`per_fault` of every run."""
        return pd.concat([per_fault(r) for r in self.runs], ignore_index=True)

    def accounting(self) -> pd.DataFrame:
        """Per topology: images uploaded, each fate's count, and the audit's lost and stale."""
        rows = []
        for topology in dict.fromkeys(r.topology for r in self.runs):
            mine = [r for r in self.runs if r.topology == topology]
            results = pd.concat([r.results for r in mine])
            counts = results["status"].value_counts()
            rows.append({"topology": topology, "uploaded": len(results),
                         **{str(f): int(counts.get(str(f), 0)) for f in (Fate.RESIZED, Fate.DEAD_LETTERED, Fate.LOST)},
                         "audit lost": sum(r.audit.get("lost", 0) for r in mine),
                         "audit stale": sum(r.audit.get("stale", 0) for r in mine)})
        return pd.DataFrame(rows)

    def verdicts(self) -> pd.DataFrame:
        return uptime_verdicts(self.runs)

    def latency(self) -> pd.DataFrame:
        return latency_effect(self.runs)


def run_availability(lab: Lab, scale: str | AvailabilityScale | dict = "ci", out_dir: str | Path = "runs", *,
                     topologies: Sequence[str] = ("single", "replicated"), replicated_offset: int | None = None,
                     replicated: Lab | None = None, seed: int = 0, progress: bool = True,
                     reporter: Reporter = QUIET) -> AvailabilityRun:
    """Run the schedule on each topology, interleaved (single, replicated; then replicated, single; ...),
    and save the tables under ``out_dir/availability-<time>/``.

    Args:
        lab: The running lab with one broker (the single topology).
        scale: ``ci``, ``full``, a mapping of :class:`AvailabilityScale`'s fields, or a scale.
        out_dir: Where the run directory goes.
        topologies: ``single`` and/or ``replicated``.
        replicated_offset: The replicated lab's port offset; default :func:`scratch_offset`.
        replicated: A running lab with three brokers to use instead of standing one up.
        seed: Seeds the images and arrivals (each run adds its index).
        progress: Show a bar over the faults.
        reporter: Reports the replicated lab's up and down.

    Raises:
        LabConfigError: an unknown scale or topology; no replicated topology in this labkit.
        ServiceError: a service refused, or a broker did not come back.
    """
    scale = scale_of(scale)
    unknown = [t for t in topologies if t not in TOPOLOGIES]
    if unknown or not topologies:
        raise LabConfigError(f"unknown topology {', '.join(unknown) or '(none)'}. Valid: {', '.join(TOPOLOGIES)}.")
    started = datetime.now(UTC)
    stamp = run_id(started)
    with contextlib.ExitStack() as stack:
        labs = {"single": lab}
        if "replicated" in topologies:
            labs["replicated"] = replicated or stack.enter_context(
                replicated_lab(scratch_offset(lab) if replicated_offset is None else replicated_offset,
                               reporter=reporter))
        progress_bar = stack.enter_context(bar(scale.repetitions * len(topologies) * scale.kills,
                                               "broker kills", disable=not progress, unit="kill"))
        runs = []
        for repetition in range(scale.repetitions):
            order = list(topologies) if repetition % 2 == 0 else list(reversed(topologies))
            for topology in order:
                runs.append(run_topology(labs[topology], topology, scale, repetition, seed + len(runs), stamp,
                                         tick=progress_bar.update))
        env = lab_metadata(lab, started, datetime.now(UTC), seed=seed, labels={"experiment": "availability"},
                           parameters={**asdict(scale), "topologies": list(topologies)},
                           brokers={t: len(lab_brokers(labs[t])) for t in topologies})
    run = AvailabilityRun(new_run_dir(out_dir, f"availability-{stamp}"), scale, runs, env)
    return save(run)


def save(run: AvailabilityRun) -> AvailabilityRun:
    """Write the run's tables (``faults``, ``results``, ``probes``, ``verdicts``, ``latency``,
    ``accounting``) and ``env.json`` into its directory."""
    from labkit.core.runs import write_json

    tables = {"faults": run.faults, "results": run.results, "probes": run.probes, "verdicts": run.verdicts(),
              "latency": run.latency(), "accounting": run.accounting()}
    for name, table in tables.items():
        table.to_csv(run.run_dir / f"{name}.csv", index=False)
    write_json(run.run_dir / "env.json", run.env)
    return run
