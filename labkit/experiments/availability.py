"""The availability experiment: the same broker kills on one broker and on three, under a steady load.

One fault schedule, run on each topology: under an open-loop load, ``kill -9`` one Kafka broker,
start it again after ``down_s``, wait until the pipeline has recovered (an image uploaded after
the broker came back has come through), wait ``gap_s``, then kill the next broker (on one broker:
the same one again). Throughout, the lab's prober (:mod:`labkit.experiments.prober`) probes every
service twice a second. Then the pipeline drains, reconciliation runs, every image gets its fate
(:func:`labkit.experiments.settle.settle`), and :func:`labkit.pipeline.audit.audit` checks that
nothing under the run's prefix is lost or stale.

**What "up" means with three brokers.** The prober's ``pipeline`` probe needs every service on
the image's path, each broker included, so it would count a replicated cluster that lost one
broker as down. :class:`QuorumProber` adds the probe this experiment judges, ``pipeline (quorum)``:
Node-RED's upload endpoint answers, every other service on the path is ready, and a majority of
the brokers is (2 of 3: enough for ``min.insync.replicas`` 2; 1 of 1).

**Where the replicated lab comes from.** The notebooks run on one lab with one broker.
:func:`replicated_lab` stands up a second, short-lived lab with ``kafka_brokers`` 3 at a scratch
port offset and data dir, and takes it down (data wiped) in a ``finally``.

Analysis: :func:`per_fault` (downtime, outages, the longest gap between completed images, the
recovery and the error budget each fault burns), :func:`uptime_verdicts` (the 99.9% clause on
time, :mod:`labkit.analysis.uptime_clause`, beside the probe-count bound), :func:`latency_effect`
(p99 during the faults and outside them, with distribution-free bounds).

Example:
    >>> run = run_availability(lab, "ci", "runs")          # doctest: +SKIP
    >>> run.faults[["topology", "target", "downtime_s"]]   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.analysis import sla, stats, uptime, uptime_clause
from labkit.analysis.budget import error_budget
from labkit.core.progress import QUIET, Reporter, bar
from labkit.core.runs import new_run_dir, run_id
from labkit.errors import LabConfigError
from labkit.experiments.faults import Fault, FaultInjector
from labkit.experiments.load import LoadRun, now_ms, start_open_loop
from labkit.experiments.prober import PATH_SERVICES, Prober
from labkit.experiments.runs import lab_metadata
from labkit.experiments.settle import POLL_INTERVAL_S, settle
from labkit.experiments.spec import load_spec
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.audit import audit
from labkit.pipeline.fate import Fate
from labkit.pipeline.metrics import lab_metrics
from labkit.stack.config import DEFAULT_PORTS, safe_offsets
from labkit.stack.lab import Lab
from labkit.stack.process import port_owner
from labkit.stack.services.kafka import broker_ids, broker_name

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
    "ci": AvailabilityScale(rate_per_s=3, warmup_s=4, down_s=3, gap_s=4, tail_s=4, recovery_timeout_s=60),
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
    """A short-lived lab with three brokers at ``port_offset``; down, its data wiped, when the block ends.

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
    try:
        with reporter.step(f"stand up a lab with 3 brokers at port offset {port_offset}"):
            lab.up()
        yield lab
    finally:
        # the first error is the one to raise
        with reporter.step("take the replicated lab down"), contextlib.suppress(Exception):
            lab.down(wipe=scratch)
        if scratch:
            shutil.rmtree(where, ignore_errors=True)


# ---------------------------------------------------------------- one run


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


# ---------------------------------------------------------------- analysis


def outage_downtime(probes: pd.DataFrame, service: str, start_ms: float, end_ms: float) -> tuple[int, float]:
    """``(outages, downtime_s)`` of ``service`` within ``[start_ms, end_ms)``: its failed probes there,
    each one probe spacing of the whole table, and their runs (an outage under way at ``start_ms``
    counts too: the span shares it)."""
    mine = probes[probes["service"] == service]
    inside = mine[(mine["t_ms"] >= start_ms) & (mine["t_ms"] < end_ms)]
    if inside.empty:
        return 0, 0.0
    cut = uptime.outages(inside, service)
    return len(cut), float((~inside["ok"].astype(bool)).sum() * uptime.probe_spacing_s(mine))


def longest_gap_s(done_ms: Sequence[float], start_ms: float, end_ms: float) -> float:
    """The longest time between two consecutive completed images around ``[start_ms, end_ms]``:
    of the gaps that overlap the span (a gap still open at ``end_ms`` counts up to it)."""
    times = np.sort(np.asarray([t for t in done_ms if np.isfinite(t)], dtype=float))
    times = np.concatenate([times[times <= end_ms], [end_ms]])
    gaps = [b - a for a, b in itertools.pairwise(times) if b > start_ms and a < end_ms]
    return round(max(gaps, default=0.0) / 1000, 2)


def per_fault(run: TopologyRun) -> pd.DataFrame:
    """One row per fault of ``run``: the broker, its downtime by the quorum probe (its failed probes
    between this kill and the next, or the run's end, each span opening one probe spacing early), the longest gap between completed images
    from the kill until the pipeline recovered, the recovery, and the share of a month's 99.9%
    error budget (43.2 min) the fault burned."""
    faults = run.faults.sort_values("start_ms")
    # A probe round is stamped when it starts, a moment before it looks: one that started just
    # before a kill may see the broker gone. So each fault's span opens one probe spacing early.
    early_ms = uptime.probe_spacing_s(run.probes) * 1000
    begins = faults["start_ms"] - early_ms
    ends = [*begins.iloc[1:], run.probes["t_ms"].max() + 1]
    done = run.results.loc[run.results["status"] == Fate.RESIZED, "t_done"].astype(float).tolist()
    rows = []
    for f, begin, until in zip(faults.itertuples(), begins, ends):
        outages, down_s = outage_downtime(run.probes, QUORUM_PROBE, begin, until)
        recovered = f.recovered_ms if f.recovered else until
        rows.append({"topology": run.topology, "repetition": run.repetition, "fault": f.fault,
                     "target": f.target, "start_ms": f.start_ms, "end_ms": f.end_ms, "recovered_ms": f.recovered_ms,
                     "outages": outages, "downtime_s": down_s,
                     "longest_gap_s": longest_gap_s(done, f.start_ms, recovered),
                     "broker_back_s": round((f.end_ms - f.start_ms) / 1000, 2),
                     "recovery_s": round((f.recovered_ms - f.end_ms) / 1000, 2) if f.recovered else math.nan,
                     "recovered": bool(f.recovered), "budget_share": down_s / BUDGET_S,
                     "faults_per_month": faults_per_budget(down_s)})
    return pd.DataFrame(rows)


def topology_probes(runs: Sequence[TopologyRun], topology: str) -> list[pd.DataFrame]:
    return [r.probes for r in runs if r.topology == topology]


def uptime_verdicts(runs: Sequence[TopologyRun], target: float = UPTIME_TARGET,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per topology, the 99.9% clause judged two ways on the quorum probe, every run pooled:

    - ``status``/``verdict``: on time, with the outages as the events (:func:`uptime_clause.judge`);
    - ``probe_status``/``probe_verdict``: the report's probe-count Clopper–Pearson bound
      (:func:`labkit.analysis.sla.pipeline_availability`), which treats probes as independent.
    """
    rows = []
    for topology in dict.fromkeys(r.topology for r in runs):
        judged = [uptime_clause.judge_probes(p, QUORUM_PROBE, target, confidence)
                  for p in topology_probes(runs, topology)]
        pooled = uptime_clause.judge(sum(j["downtime_s"] for j in judged), sum(j["outages"] for j in judged),
                                     max(j["longest_s"] for j in judged), sum(j["window_s"] for j in judged),
                                     max(uptime.probe_spacing_s(p) for p in topology_probes(runs, topology)),
                                     target, confidence)
        probes = pd.concat(topology_probes(runs, topology), ignore_index=True)
        by_count = sla.pipeline_availability(
            probes[probes["service"] == QUORUM_PROBE].assign(service="pipeline").drop(columns="t_ms"),
            target, confidence)
        rows.append({"topology": topology, **{k: pooled[k] for k in (
            "status", "availability", "downtime_s", "outages", "window_s", "share_bound", "needed_s", "verdict")},
            "probes": int(by_count["probes"]), "probe_status": by_count["status"],
            "probe_lower_bound": by_count["lower_bound"], "probe_verdict": by_count["verdict"]})
    return pd.DataFrame(rows)


def latency_effect(runs: Sequence[TopologyRun], q: float = 0.99, confidence: float = 0.95) -> pd.DataFrame:
    """Per topology, the ``q`` percentile of end-to-end latency for images sent during a fault (from
    the kill until the pipeline recovered) and for the others, with distribution-free bounds
    (an image that never finished counts as slower than any): ``topology, phase, q, n, estimate,
    low, high``, in seconds (a bound the sample cannot give is infinite)."""
    rows = []
    for topology in dict.fromkeys(r.topology for r in runs):
        during, outside = [], []
        for run in (r for r in runs if r.topology == topology):
            sent = run.results["t_upload_start"].astype(float)
            hit = np.zeros(len(sent), dtype=bool)
            for f in run.faults.itertuples():
                until = f.recovered_ms if f.recovered else sent.max() + 1
                hit |= ((sent >= f.start_ms) & (sent <= until)).to_numpy()
            seconds = run.results["duration_ms"].astype(float).to_numpy() / 1000
            during += list(seconds[hit])
            outside += list(seconds[~hit])
        for phase, sample in (("during a fault", during), ("outside faults", outside)):
            if not sample:
                continue
            row = stats.percentiles(sample, [q], confidence).iloc[0]
            rows.append({"topology": topology, "phase": phase, "q": q, "n": int(row["n"]), "estimate": row["estimate"],
                         "low": row["low"], "high": row["high"]})
    return pd.DataFrame(rows)


def faults_per_budget(downtime_s: float, slo: float = UPTIME_TARGET, days: float = 30) -> float:
    """How many faults that each cost ``downtime_s`` the SLO's error budget over ``days`` absorbs
    (whole faults; infinite when a fault costs nothing).

    Example:
        >>> faults_per_budget(2.592)         # 99.9% of 30 days leaves 2592 s
        1000
    """
    budget_s = error_budget(slo, days=days).minutes * 60
    return math.inf if downtime_s <= 0 else math.floor(budget_s / downtime_s + 1e-9)


# ---------------------------------------------------------------- plots


def timeline_plot(run: AvailabilityRun, repetition: int = 0):
    """One panel per topology (its run ``repetition``): images completed per second, the faults shaded
    from the kill until the broker was healthy again, and the quorum probe's outages drawn in red
    along the bottom. Seconds count from the load's first upload."""
    import matplotlib.pyplot as plt

    chosen = [r for r in run.runs if r.repetition == repetition]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), sharex=True, layout="constrained",
                             squeeze=False)
    for ax, one in zip(axes[:, 0], chosen):
        t0 = one.window[0]
        done = one.results.loc[one.results["status"] == Fate.RESIZED, "t_done"].astype(float)
        per_s = ((done - t0) // 1000).value_counts().sort_index()
        seconds = np.arange(0, int(per_s.index.max()) + 2) if len(per_s) else np.arange(2)
        ax.step(seconds, per_s.reindex(seconds, fill_value=0), where="post", color="tab:blue",
                label="images completed per second")
        for f in one.faults.itertuples():
            ax.axvspan((f.start_ms - t0) / 1000, (f.end_ms - t0) / 1000, color="tab:orange", alpha=0.25)
            ax.annotate(f"kill -9 {f.target}", ((f.start_ms - t0) / 1000, ax.get_ylim()[1] * 0.92), fontsize=8)
        for o in uptime.outages(one.probes[one.probes["service"] == QUORUM_PROBE], QUORUM_PROBE).itertuples():
            ax.hlines(-0.3, (o.start_ms - t0) / 1000, (o.end_ms - t0) / 1000 + 0.5, color="tab:red", linewidth=6)
        ax.set(ylabel="images/s", title=f"{one.topology} ({TOPOLOGIES[one.topology]} broker(s)): "
                                        f"{len(one.faults)} kills, {per_fault(one)['downtime_s'].sum():.1f} s down")
        ax.set_xlim(0, (one.probes["t_ms"].max() - t0) / 1000 + 1)  # the drain's stragglers are not the run
    axes[-1, 0].set_xlabel("seconds since the load started (orange: broker down until healthy; red: pipeline down)")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    return fig


def downtime_plot(faults: pd.DataFrame):
    """Two panels, one dot per fault, a bar at each topology's median: downtime by the quorum probe,
    and the longest gap between completed images."""
    import matplotlib.pyplot as plt

    topologies = list(dict.fromkeys(faults["topology"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    rng = np.random.default_rng(0)
    for ax, column, label in ((axes[0], "downtime_s", "downtime per fault (s, quorum probe)"),
                              (axes[1], "longest_gap_s", "longest gap between completed images (s)")):
        for i, topology in enumerate(topologies):
            values = faults.loc[faults["topology"] == topology, column].astype(float)
            ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, color="black", s=25, zorder=3)
            if len(values):
                ax.hlines(values.median(), i - 0.25, i + 0.25, color="tab:red", linewidth=2, zorder=2)
        ax.set_xticks(range(len(topologies)), [f"{t}\n({TOPOLOGIES[t]} broker(s))" for t in topologies])
        ax.set(ylabel=label, xlim=(-0.6, len(topologies) - 0.4))
        ax.set_ylim(bottom=0)
    n = faults.groupby("topology").size()
    fig.suptitle("Each broker kill's cost, per topology (dots: faults, " +
                 ", ".join(f"{t} n={n[t]}" for t in topologies) + "; red: median)")
    return fig
