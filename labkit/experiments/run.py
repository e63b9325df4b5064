"""Experiments: a load, a fault schedule and a retry policy, run on the real pipeline and measured.

An experiment is declared in a small YAML file (``stack/experiments/*.yaml``) or a dict:

.. code-block:: yaml

    name: kafka-outage
    load: {kind: open, rate_per_s: 3, images: 12, max_duration_s: 30}
    faults: [{kind: stop, target: kafka, at_s: 1, duration_s: 8}]
    retry: exponential            # or none / fixed, or {upload: {...}, invoke: {...}}
    reconcile: true
    repetitions: 1
    seed: 7

:func:`run_experiment` runs it and saves tidy tables (:func:`labkit.analysis.report.save_run`): one
row per image with its fate (``ok``, ``error``, ``lost``, ``pending``), the health probes,
and the environment. :func:`run_matrix` runs every combination of a few variations.

Example:
    >>> run = run_experiment(lab, "stack/experiments/kafka-outage.yaml", "runs")   # doctest: +SKIP
    >>> run.accounting()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import httpx
import numpy as np
import pandas as pd
import psutil
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.analysis import report, sla
from labkit.errors import LabConfigError
from labkit.experiments.faults import Fault, FaultInjector, label, validate
from labkit.experiments.load import LoadRun, now_ms, start_closed_loop, start_open_loop
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.deploy import OUTPUT_BUCKET, RetryPolicy
from labkit.pipeline.metrics import STAGES, load_metrics
from labkit.pipeline.reconcile import RECORD_GRACE_S, output_key, reconcile
from labkit.pipeline.upload import UPLOAD_PATH, UPLOAD_TIMEOUT_S, metrics_path
from labkit.stack.lab import Lab
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.services.storage import TOPIC
from labkit.stack.versions import STACK_DIR

EXPERIMENTS_DIR = STACK_DIR / "experiments"
REPO_DIR = STACK_DIR.parent
PROBE_INTERVAL_S = 0.5
POLL_INTERVAL_S = 0.25
# The services an image passes through: the synthetic ``pipeline`` probe needs them all.
PATH_SERVICES = ("storage", "kafka", "nodered", "faas", "storage-out")
RESULT_COLUMNS = ("experiment", "policy", "fault", "repetition", "seed", "key", "status", "duplicates",
                  "duration_ms", *STAGES, "t_upload_start", "reason", "attempts", "upload_status", "reconciled",
                  "trace_id", "t_sched_ms", "t_start_ms", "t_end_ms", "t_webhook", "t_done",
                  "duration_from_sched_ms")


# ---------------------------------------------------------------- the declaration


class RetrySpec(BaseModel):
    """One hop's retry policy (see :class:`labkit.pipeline.deploy.RetryPolicy`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["none", "fixed", "exponential"] = Field(
        "exponential", description="one of none, fixed (base_ms between attempts), exponential (full jitter)")
    max_attempts: int = Field(10, ge=1, le=20, description="attempts in all, the first included: 1..20")
    base_ms: int = Field(200, ge=0, le=60_000, description="base delay in ms: 0..60000")
    cap_ms: int = Field(5000, ge=0, le=600_000, description="longest delay in ms: 0..600000")
    deadline_s: float = Field(30.0, gt=0, le=600, description="no attempt starts later than this: (0, 600] s")

    def policy_object(self) -> RetryPolicy:
        return RetryPolicy(**self.model_dump())


def _preset(value: Any, presets: Mapping[str, Any], kind: str) -> Any:
    """A preset's value when ``value`` names one; any other non-string as it is."""
    if not isinstance(value, str):
        return value
    if value not in presets:
        raise ValueError(f"unknown {kind} preset {value!r}; presets: {', '.join(presets)}")
    return presets[value]


RETRY_PRESETS: dict[str, RetrySpec] = {
    "none": RetrySpec(policy="none", max_attempts=1),
    "fixed": RetrySpec(policy="fixed", max_attempts=4, base_ms=500),
    "exponential": RetrySpec(),  # the pipeline's default
}


class RetryHops(BaseModel):
    """The retry policy of each hop that retries: ``upload`` (Node-RED -> store) and ``invoke``
    (Node-RED -> FaaS). A preset name or one policy (a mapping) sets both hops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload: RetrySpec = Field(RetrySpec(), description="the upload hop's policy: a preset name or a mapping")
    invoke: RetrySpec = Field(RetrySpec(), description="the invoke hop's policy: a preset name or a mapping")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in RETRY_PRESETS:
                raise ValueError(f"unknown retry preset {value!r}; presets: {', '.join(RETRY_PRESETS)}, "
                                 "or a mapping such as {policy: fixed, base_ms: 500}")
            return {"upload": value, "invoke": value}
        if isinstance(value, Mapping) and not {"upload", "invoke"} & set(value):
            return {"upload": dict(value), "invoke": dict(value)}  # one policy for both hops
        return value

    @field_validator("upload", "invoke", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        return _preset(value, RETRY_PRESETS, "retry")

    def name(self) -> str:
        """A short label: the preset's name, the policy, or ``upload:X/invoke:Y``."""
        def one(spec: RetrySpec) -> str:
            return next((n for n, p in RETRY_PRESETS.items() if p == spec), spec.policy)

        if self.upload == self.invoke:
            return one(self.upload)
        return f"upload:{one(self.upload)}/invoke:{one(self.invoke)}"


class LoadSpec(BaseModel):
    """The load: open loop (Poisson arrivals) or closed loop (concurrent uploaders), bounded twice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["open", "closed"] = Field("open", description="open (a rate) or closed (a concurrency)")
    rate_per_s: float | None = Field(None, gt=0, le=500, description="mean uploads per second (open loop): (0, 500]")
    concurrency: int | None = Field(None, ge=1, le=64, description="concurrent uploaders (closed loop): 1..64")
    images: int = Field(ge=1, le=100_000, description="the most images to upload: 1..100000")
    max_duration_s: float = Field(60.0, gt=0, le=3600, description="the longest the load lasts: (0, 3600] s")
    sizes: list[tuple[int, int]] | None = Field(
        None, description="image sizes as [width, height] pairs, e.g. [[640, 480]]; default: camera-like mix")
    workers: int = Field(16, ge=1, le=64, description="open loop: upload threads, the most uploads in flight")

    @model_validator(mode="after")
    def _rate_or_concurrency(self) -> LoadSpec:
        if self.kind == "open" and self.rate_per_s is None:
            raise ValueError("an open-loop load needs rate_per_s (uploads per second), e.g. rate_per_s: 3")
        if self.kind == "closed" and self.concurrency is None:
            raise ValueError("a closed-loop load needs concurrency (uploaders at once), e.g. concurrency: 4")
        return self


class FaultSpec(BaseModel):
    """One fault of the schedule (see :class:`labkit.experiments.faults.Fault`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="stop, kill, pause (a service) or latency, timeout, reset_peer, bandwidth (a hop)")
    target: str = Field(description=f"a service ({', '.join(SERVICE_NAMES)}) or a hop")
    at_s: float = Field(0.0, ge=0, le=3600, description="seconds after the load starts: [0, 3600]")
    duration_s: float = Field(5.0, gt=0, le=3600, description="how long the fault lasts: (0, 3600] s")
    params: dict[str, float] = Field(default_factory=dict, description="a network fault's parameters")

    @model_validator(mode="after")
    def _valid(self) -> FaultSpec:
        try:
            validate(self.fault())
        except LabConfigError as e:
            raise ValueError(str(e)) from None
        return self

    def fault(self) -> Fault:
        return Fault(self.kind, self.target, self.at_s, self.duration_s, dict(self.params))


class UntilRecovered(BaseModel):
    """Run the load past the faults until the pipeline has recovered: measured, not a fixed window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(gt=0, le=1800, description="the longest wait after the last fault ends: (0, 1800] s")
    tail_s: float = Field(0.0, ge=0, le=600, description="keep sending at least this long after the fault: [0, 600] s")


FAULT_PRESETS: dict[str, list[FaultSpec]] = {
    "none": [],
    # Long enough to outlast the store's Kafka writer (10 attempts, ~7.5 s of backoff): events are dropped.
    "kafka-stop": [FaultSpec(kind="stop", target="kafka", at_s=1.0, duration_s=8.0)],
}


class ExperimentSpec(BaseModel):
    """One experiment: what load, which faults, which retry policy, reconciliation, how often."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                      description="a short slug: lowercase letters, digits, - and _ (it names the run directory)")
    description: str = Field("", description="one sentence: what the experiment asks")
    load: LoadSpec = Field(description="a mapping with kind, rate_per_s or concurrency, images, max_duration_s")
    faults: list[FaultSpec] = Field(default_factory=list, description="a list of faults, or a preset name: "
                                    + ", ".join(FAULT_PRESETS))
    fault_label: str | None = Field(None, description="the fault's name in tables and plots")
    retry: RetryHops = Field(RetryHops(), description="a preset (none, fixed, exponential), one policy "
                             "mapping, or {upload: ..., invoke: ...}")
    policy_label: str | None = Field(None, description="the policy's name in tables and plots")
    reconcile: bool = Field(False, description="true or false: republish lost images after the drain")
    repetitions: int = Field(1, ge=1, le=20, description="how many times to run it: 1..20")
    seed: int = Field(0, ge=0, description="a non-negative integer (images and arrivals)")
    drain_timeout_s: float = Field(120.0, gt=0, le=1800, description="longest wait for the pipeline to drain")
    settle_s: float = Field(5.0, gt=0, le=120, description="quiet time after which unfinished images are lost")
    max_inflight: int = Field(8, ge=1, le=256, description="events the flow processes at once: 1..256")
    sla_threshold_s: float | None = Field(None, gt=0, description="the SLA bound in seconds (default: the lab's)")
    until_recovered: UntilRecovered | None = Field(
        None, description="{timeout_s: S, tail_s: T}: after the last fault ends, keep the load running until an "
        "image sent after it has come through (and at least T s), at most S s; unset: the load runs its own course")

    @field_validator("faults", mode="before")
    @classmethod
    def _fault_preset(cls, value: Any) -> Any:
        return _preset(value, FAULT_PRESETS, "fault")

    @property
    def policy_name(self) -> str:
        """The ``policy`` column: the retry policy's label, ``+ reconcile`` when reconciliation is on."""
        return (self.policy_label or self.retry.name()) + (" + reconcile" if self.reconcile else "")

    @property
    def fault_name(self) -> str:
        """The ``fault`` column: ``fault_label``, else the preset's name, else the faults' labels."""
        if self.fault_label:
            return self.fault_label
        preset = next((n for n, f in FAULT_PRESETS.items() if f == self.faults), None)
        return preset or "+".join(f"{label(f.fault())}:{f.duration_s:g}s" for f in self.faults)


def load_spec(source: ExperimentSpec | Mapping | str | os.PathLike) -> ExperimentSpec:
    """Read and validate an experiment: a spec, a mapping, a YAML file's path, or a name in
    ``stack/experiments/`` (``"kafka-outage"``).

    Raises:
        LabConfigError: The file is missing or not YAML, or a field is invalid; the message
            names each bad field, what was given, and how to fix it.
    """
    if isinstance(source, ExperimentSpec):
        return source
    where = "the experiment"
    if not isinstance(source, Mapping):
        path = _spec_path(source)
        where = str(path)
        try:
            source = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise LabConfigError(f"{where} is not valid YAML: {e}. Fix: check the indentation near that line.") from e
        if not isinstance(source, Mapping):
            raise LabConfigError(f"{where} must hold a mapping (name:, load:, ...), got {type(source).__name__}.")
    try:
        return ExperimentSpec.model_validate(dict(source))
    except ValidationError as e:
        raise LabConfigError(_explain(where, e)) from None


def _spec_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if not path.exists() and not path.suffix and (EXPERIMENTS_DIR / f"{path}.yaml").exists():
        path = EXPERIMENTS_DIR / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise LabConfigError(f"No experiment file {source}. Fix: pass a YAML file's path, or one of: {known}.")
    return path


def _explain(where: str, error: ValidationError) -> str:
    """One line per invalid field: where it is, what is wrong, what was given, how to fix it."""
    lines = [f"{where} is invalid ({error.error_count()} problem(s)):"]
    for e in error.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ").rstrip(".")
        if e["type"] == "value_error":  # our own validators' messages already say what to do
            lines.append(f"  - {loc}: {msg}.")
            continue
        lines.append(f"  - {loc}: {msg} (got {e.get('input')!r:.80}). Fix: {_hint(e)}."
                     if e["type"] != "missing" else f"  - {loc}: {msg}. Fix: {_hint(e)}.")
    return "\n".join(lines)


def _hint(error: dict) -> str:
    """The fix for one error: the field's description, or the valid field names."""
    model: type[BaseModel] | None = ExperimentSpec
    parent, described = model, None
    for part in error["loc"]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            continue
        parent, info = model, model.model_fields[part]
        described = info.description
        inner = info.annotation
        candidates = getattr(inner, "__args__", (inner,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if error["type"] == "extra_forbidden":
        return f"remove it; the valid fields here are {', '.join(parent.model_fields)}"
    if error["type"] == "missing":
        return f"add it: {described}" if described else "add it"
    return f"use {described}" if described else "see stack/experiments/README.md"


# ---------------------------------------------------------------- results


@dataclass
class Run:
    """A finished experiment (or matrix): its tables, and where they were saved.

    Attributes:
        spec: The experiment (for a matrix: the base experiment).
        run_dir: Holds ``results.csv``, ``probes.csv``, ``env.json``.
        results: One row per image (see :mod:`labkit.analysis.sla` for the columns' contract).
        probes: One row per health probe: ``t_ms, service, ok``.
        env: Versions, machine, git revision, parameters, seed, timestamps.
        load: The load generator's table, one row per upload (with ``repetition``).
        reconciliation: What reconciliation found and did, one row per source object.
        parts: For a matrix: one run per combination.
    """

    spec: ExperimentSpec
    run_dir: Path
    results: pd.DataFrame
    probes: pd.DataFrame
    env: dict
    load: pd.DataFrame = field(default_factory=pd.DataFrame)
    reconciliation: pd.DataFrame = field(default_factory=pd.DataFrame)
    parts: list[Run] = field(default_factory=list)

    def accounting(self) -> pd.DataFrame:
        """Where the images went, per policy and fault (:func:`labkit.analysis.sla.accounting`)."""
        return sla.accounting(self.results)

    def report(self, lab: Lab, reports_dir: str | os.PathLike = "reports",
               formats: Sequence[str] = report.FORMATS) -> dict[str, Path]:
        """Render the SLA report (HTML, PDF) under ``reports_dir``, named after the run directory."""
        threshold = self.spec.sla_threshold_s or lab.ctx.config.sla_threshold_s
        return report.render_report(self.results, self.probes, self.env, reports_dir,
                                    title=f"Image pipeline SLA report: {self.run_dir.name}", threshold_s=threshold,
                                    formats=formats, secrets=lab.ctx.secrets.secret_values(), name=self.run_dir.name)


# ---------------------------------------------------------------- running one experiment


OnUpload = Callable[[dict], None]


def run_experiment(lab: Lab, spec: ExperimentSpec | Mapping | str | os.PathLike, out_dir: str | os.PathLike,
                   *, progress: bool = True, on_upload: OnUpload | None = None) -> Run:
    """Run an experiment on the lab and save its tables under ``out_dir/<name>-<timestamp>/``.

    Per repetition: stand the pipeline up with the policy, run the load while the fault
    schedule runs (times count from the load's start), wait for the pipeline to drain
    (bounded), reconcile if asked (and drain again), and classify every uploaded image:

    - ``ok``: a metrics line of outcome ok (``duplicates`` counts extra ok lines);
    - ``error``: dead-lettered (``reason`` is its error code), or its upload was refused;
    - ``lost``: no output and no dead-letter record once the pipeline went quiet;
    - ``pending``: still unfinished at the drain's deadline while the pipeline was moving.

    Health probes (each service's readiness check and a synthetic ``pipeline`` probe) run
    every 0.5 s throughout. Whatever happens, every fault is cleared and the pipeline's
    default policy is restored before this returns or raises.

    Args:
        lab: The running lab.
        spec: The experiment (see :func:`load_spec`).
        out_dir: Where run directories go.
        progress: Show the load's progress bar.
        on_upload: Called with each upload's row; raising from it aborts the experiment.

    Raises:
        LabConfigError: An invalid experiment.
        ServiceError: A service refused; a fault could not be injected or cleared.
    """
    spec = load_spec(spec)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}"
    injector = FaultInjector(lab)
    reps: list[dict] = []
    try:
        stand_up_policy(lab, spec.retry, spec.sla_threshold_s, spec.max_inflight)
        with Prober(lab) as prober:
            for repetition in range(spec.repetitions):
                reps.append(_repetition(lab, spec, repetition, f"exp/{spec.name}/{run_id}/r{repetition}/",
                                        injector, progress, on_upload))
    finally:
        try:
            injector.clear_all()
        finally:
            pipeline.stand_up(lab)  # the default policy again
    finished = datetime.now(UTC)
    results = pd.concat([r["results"] for r in reps], ignore_index=True)
    env = environment(lab, spec, started, finished, [w for r in reps for w in r["fault_windows"]])
    env["recovery"] = [r["recovery"] for r in reps if r["recovery"] is not None]
    run_dir = report.save_run(results, prober.table(), env, _new_dir(Path(out_dir), f"{spec.name}-{run_id}"))
    return Run(spec, run_dir, results, prober.table(), env, _concat([r["load"] for r in reps]),
               _concat([r["reconciliation"] for r in reps]))


def _concat(frames: Sequence[pd.DataFrame | None]) -> pd.DataFrame:
    """The non-empty frames, one under the other (an empty frame when there are none)."""
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _new_dir(parent: Path, name: str) -> Path:
    path, n = parent / name, 1
    while path.exists():
        n += 1
        path = parent / f"{name}-{n}"
    return path


def _repetition(lab: Lab, spec: ExperimentSpec, repetition: int, prefix: str, injector: FaultInjector,
                progress: bool, on_upload: OnUpload | None) -> dict:
    """One repetition: load under the fault schedule, drain, reconcile, classify."""
    seed = spec.seed + repetition
    faults = [f.fault() for f in spec.faults]
    # The load builds its image pool before it returns; the fault clock starts with its arrivals.
    load = _start_load(lab, spec.load, seed, prefix, progress, on_upload)
    try:
        schedule = injector.run_schedule(faults)
    except BaseException:
        load.stop()
        raise
    recovery = None
    try:
        try:
            if spec.until_recovered is not None:
                schedule.wait()
                ends = schedule.windows()["end_ms"].dropna()
                since_ms = float(ends.max()) if len(ends) else now_ms()
                recovery = wait_until_recovered(lab, load, since_ms, spec.until_recovered)
            table = load.wait()
        except BaseException:
            load.stop()
            with contextlib.suppress(BaseException):  # the first error is the one to raise
                load.wait(UPLOAD_TIMEOUT_S)
            raise
        schedule.wait()
    finally:
        schedule.cancel()  # a no-op once it has ended; else it clears what it injected
    results, reconciled = settle(lab, spec, table, prefix, repetition, seed)
    return {"results": results, "load": table.assign(repetition=repetition),
            "reconciliation": None if reconciled is None else reconciled.assign(repetition=repetition),
            "fault_windows": schedule.windows().to_dict("records"),
            "recovery": None if recovery is None else {**recovery, "repetition": repetition}}


def wait_until_recovered(lab: Lab, load: LoadRun, since_ms: float, until: UntilRecovered) -> dict:
    """Let ``load`` run until an image whose upload started at ``since_ms`` or later has come
    through end to end (an ``ok`` metrics line) and ``until.tail_s`` have passed since
    ``since_ms``, at most ``until.timeout_s``; then stop the load.

    This measures recovery by what happened, not by a fixed window: on a busy machine a
    service takes longer to come back, and the load simply runs longer. The wait also ends
    when the load has ended on its own and none of its uploads since ``since_ms`` is unfinished.

    Returns:
        ``recovered`` (bool), ``waited_s`` (how long it waited), ``timeout_s``, ``since_ms``
        and ``key`` (the first image through, None when none came).
    """
    started = time.monotonic()
    first: list[str] = []

    def first_through() -> str | None:
        """The first image through (None: keep waiting; "": the load ended with nothing to wait for)."""
        if not first:
            sent = load.results()
            after = set(sent.loc[(sent["t_upload_start"] >= since_ms) & (sent["status_code"] == 200), "key"])
            if not after:
                return "" if load.done() else None  # nothing sent since, and nothing more will be
            lines = load_metrics(metrics_path(lab))
            first.extend(lines.loc[lines["key"].isin(after) & (lines["outcome"] == "ok"), "key"].iloc[:1])
        tail_over = now_ms() >= since_ms + until.tail_s * 1000 or load.done()
        return first[0] if first and tail_over else None

    try:
        Retrying(stop=stop_after_delay(until.timeout_s), wait=wait_fixed(POLL_INTERVAL_S * 2),
                 retry=retry_if_result(lambda k: k is None))(first_through)
    except RetryError:
        pass
    load.stop()
    return {"recovered": bool(first), "waited_s": round(time.monotonic() - started, 2), "timeout_s": until.timeout_s,
            "since_ms": since_ms, "key": first[0] if first else None}


def settle(lab: Lab, spec: ExperimentSpec, table: pd.DataFrame, prefix: str, repetition: int = 0,
           seed: int | None = None, fault: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """After a load: drain, reconcile if ``spec`` says so (and drain again), classify every upload.

    Returns:
        The results (:data:`RESULT_COLUMNS`, grouped by ``spec`` and ``fault``, default its
        fault's name) and what reconciliation found (None when it did not run).
    """
    sent = table.loc[table["status_code"] == 200, "key"].tolist()
    rows, moving = drain(lab, sent, spec.drain_timeout_s, spec.settle_s)
    reconciled = None
    if spec.reconcile:
        # The drain saw settle_s of quiet, so an output that old without a line lost its record.
        reconciled = reconcile(lab, republish=True, prefix=prefix, grace_s=0, record_grace_s=spec.settle_s + 2.0)
        if (reconciled["action"] == "republished").any():
            rows, moving = drain(lab, sent, spec.drain_timeout_s, spec.settle_s)
    results = classify(table, rows, moving, reconciled)
    for column, value in (("seed", spec.seed if seed is None else seed), ("repetition", repetition),
                          ("fault", fault or spec.fault_name), ("policy", spec.policy_name),
                          ("experiment", spec.name)):
        results.insert(0, column, value)
    return results[list(RESULT_COLUMNS)], reconciled


def _start_load(lab: Lab, load: LoadSpec, seed: int, prefix: str, progress: bool,
                on_upload: OnUpload | None) -> LoadRun:
    common = {"seed": seed, "prefix": prefix, "sizes": load.sizes, "progress": progress, "on_upload": on_upload}
    if load.kind == "open":
        return start_open_loop(lab, load.rate_per_s, load.images, load.max_duration_s, workers=load.workers, **common)
    return start_closed_loop(lab, load.concurrency, load.images, load.max_duration_s, **common)


# ---------------------------------------------------------------- the retry policy per hop

# The flow's two instances of the retry subflow, and the tab env prefix each reads when the hops differ.
HOP_RETRY_NODES = {"upload": "pl_up_retry", "invoke": "pl_inv_retry"}


def stand_up_policy(lab: Lab, retry: RetryHops, sla_threshold_s: float | None = None, max_inflight: int = 8) -> None:
    """:func:`labkit.pipeline.deploy.stand_up` with a retry policy per hop.

    One policy for both hops is exactly ``stand_up(retry=...)``. Different policies deploy the
    same flow with each retry-subflow instance reading its own tab env (``UPLOAD_RETRY_*``,
    ``INVOKE_RETRY_*``), since ``stand_up`` sets one policy for both.
    """
    upload, invoke = retry.upload.policy_object(), retry.invoke.policy_object()
    if upload == invoke:
        pipeline.stand_up(lab, sla_threshold_s, max_inflight, retry=upload)
        return
    pipeline.ensure_buckets(lab)
    pipeline.deploy_action(lab)
    threshold_s = lab.ctx.config.sla_threshold_s if sla_threshold_s is None else sla_threshold_s
    tab_env = {"SLA_THRESHOLD_MS": round(threshold_s * 1000, 3), "MAX_INFLIGHT": max_inflight, **upload.tab_env()}
    for hop, policy in (("upload", upload), ("invoke", invoke)):
        tab_env.update({f"{hop.upper()}_{name}": value for name, value in policy.tab_env().items()})
    flows = pipeline.pipeline_flows(tab_env)
    for node in flows:
        hop = next((h for h, node_id in HOP_RETRY_NODES.items() if node["id"] == node_id), None)
        if hop:
            node["env"] = [{**e, "value": f"{hop.upper()}_{e['value']}"} for e in node["env"]]
    ids = {n["id"] for n in flows}
    with lab.nodered() as admin:
        current, rev = admin.flows_with_rev()
        admin.deploy([n for n in current if n.get("id") not in ids and n.get("z") not in ids] + flows, rev=rev)
    pipeline.wait_for_consumer(lab)


# ---------------------------------------------------------------- draining and classifying


def drain(lab: Lab, keys: Sequence[str], timeout_s: float, settle_s: float) -> tuple[pd.DataFrame, bool]:
    """Wait until every key has a metrics line, or the pipeline has gone quiet, or ``timeout_s``.

    Quiet means: no key finished for ``settle_s``, the flow's consumer group has read
    everything on the topic (lag 0), and no unfinished key has a fresh output (the action
    wrote it, and the flow may still be waiting for the store's webhook to record it). Images
    still unfinished then are not coming. On a busy machine an image can take longer than
    ``settle_s``; the output check keeps such an image from being called lost.

    Returns:
        The metrics lines of ``keys``, and whether the pipeline was still moving at the end
        (the deadline passed while images were finishing or events were waiting on the topic).
    """
    wanted = set(keys)
    deadline = time.monotonic() + timeout_s
    finished, changed, lag_checked = -1, time.monotonic(), 0.0
    while True:
        frame = load_metrics(metrics_path(lab))
        frame = frame[frame["key"].isin(wanted)]
        now = time.monotonic()
        count = frame.loc[frame["outcome"] != "malformed", "key"].nunique()
        if count >= len(wanted):
            return frame, False
        if count != finished:
            finished, changed = count, now
        quiet = now - changed >= settle_s
        if quiet and now - lag_checked >= 1.0:
            lag_checked = now
            if consumer_lag(lab) == 0 and not fresh_outputs(lab, wanted - set(frame["key"])):
                return frame, False
        if now >= deadline:
            return frame, True
        time.sleep(POLL_INTERVAL_S)


def fresh_outputs(lab: Lab, keys: set[str], younger_than_s: float = RECORD_GRACE_S) -> list[str]:
    """The outputs of ``keys`` that were written less than ``younger_than_s`` ago: images the
    flow has resized but may not have recorded yet."""
    wanted = {}
    for key in keys:
        with contextlib.suppress(Exception):  # a key the action refuses has no output
            wanted[output_key(key)] = key
    if not wanted:
        return []
    prefix = os.path.commonprefix(list(wanted)) or None
    now = time.time()
    return [o.object_name for o in lab.s3("storage-out").list_objects(OUTPUT_BUCKET, prefix=prefix, recursive=True)
            if o.object_name in wanted and now - o.last_modified.timestamp() < younger_than_s]


def consumer_lag(lab: Lab) -> int | None:
    """Records on topic ``dit247`` the flow's consumer group has not read yet; None when Kafka does not answer."""
    admin = consumer = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=lab.kafka_bootstrap, client_id="labkit-drain",
                                 request_timeout_ms=3000)
        consumer = KafkaConsumer(bootstrap_servers=lab.kafka_bootstrap, request_timeout_ms=3000)
        offsets = admin.list_group_offsets(pipeline.CONSUMER_GROUP).get(pipeline.CONSUMER_GROUP, {})
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        ends = consumer.end_offsets(partitions)
        return sum(end - max(offsets[tp].offset if tp in offsets else 0, 0) for tp, end in ends.items())
    except Exception:  # noqa: BLE001 - kafka-python raises many types while the broker is away
        return None
    finally:
        for client in (admin, consumer):
            if client is not None:
                client.close()


def classify(load: pd.DataFrame, metrics: pd.DataFrame, moving: bool,
             reconciled: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per upload of the load table: the image's fate (see :func:`run_experiment`)."""
    republished = set() if reconciled is None else set(reconciled.loc[reconciled["action"] == "republished", "key"])
    by_key = {key: rows for key, rows in metrics.groupby("key")} if len(metrics) else {}
    rows = [_fate(upload, by_key.get(upload.key), moving) | {"reconciled": upload.key in republished}
            for upload in load.itertuples()]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS[5:]))  # the group columns come from the spec


def _fate(upload, lines: pd.DataFrame | None, moving: bool) -> dict:
    row = {"key": upload.key, "trace_id": upload.trace_id, "upload_status": upload.status_code,
           "t_sched_ms": upload.t_sched_ms, "t_start_ms": upload.t_start_ms, "t_end_ms": upload.t_end_ms,
           "attempts": upload.attempts, "duplicates": 0, "duration_ms": np.nan, "t_webhook": np.nan,
           "t_done": np.nan,
           "t_upload_start": _first(upload.t_upload_start, upload.t_start_ms), **dict.fromkeys(STAGES, np.nan)}
    ok = lines[lines["outcome"] == "ok"].sort_values("t_done") if lines is not None else None
    failed = lines[lines["outcome"] != "ok"] if lines is not None else None
    if ok is not None and len(ok):
        line = ok.iloc[0]
        row.update({stage: line[stage] for stage in STAGES})
        row.update(status="ok", reason=None, duplicates=len(ok) - 1, duration_ms=line["duration_ms"],
                   t_webhook=line["t_webhook"], t_done=line["t_done"], attempts=line["attempts"],
                   t_upload_start=_first(line["t_upload_start"], row["t_upload_start"]))
        row["duration_from_sched_ms"] = line["t_done"] - upload.t_sched_ms
    elif failed is not None and len(failed):
        line = failed.iloc[-1]
        row.update({stage: line[stage] for stage in STAGES})
        row.update(status="error", reason=str(line.get("code") or line["outcome"]), attempts=line["attempts"])
    elif upload.status_code != 200:
        row.update(status="error", reason=f"upload refused: HTTP {upload.status_code}: {upload.error}"
                   if upload.status_code else f"upload failed: {upload.error}")
    else:
        row.update(status="pending" if moving else "lost",
                   reason="still in flight at the cut-off" if moving else "no output and no dead-letter record")
    row.setdefault("duration_from_sched_ms", np.nan)
    return row


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None and not pd.isna(v)), np.nan)


# ---------------------------------------------------------------- health probes


class Prober:
    """Probes every service's readiness, and the pipeline as a whole, every ``interval_s`` in a thread.

    The synthetic ``pipeline`` probe is ok when Node-RED's upload endpoint answers (a POST
    without a key gets its 400) and every service an image passes through is ready. Each
    round runs in a small pool, so a probe that hangs until its timeout (a paused service)
    does not stretch the interval between rounds.
    """

    def __init__(self, lab: Lab, interval_s: float = PROBE_INTERVAL_S):
        self.lab, self.interval_s = lab, interval_s
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="labkit-prober", daemon=True)
        self._http = httpx.Client(base_url=lab.endpoints["nodered"], timeout=1.0)
        self._rounds = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labkit-probe")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._rounds.shutdown()
        self._http.close()

    def table(self) -> pd.DataFrame:
        """One row per probe: ``t_ms`` (epoch ms), ``service``, ``ok``, in time order."""
        with self._lock:
            frame = pd.DataFrame(list(self._rows), columns=["t_ms", "service", "ok"])
        return frame.sort_values(["t_ms", "service"], kind="stable").reset_index(drop=True)

    def _loop(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            self._rounds.submit(self._round, round(time.time() * 1000))
            next_round += self.interval_s
            self._stop.wait(max(0.0, next_round - time.monotonic()))

    def _round(self, t_ms: int) -> None:
        health = self._services()
        pipeline_ok = self._upload_answers() and all(health.get(s, False) for s in PATH_SERVICES)
        rows = [{"t_ms": t_ms, "service": s, "ok": ok} for s, ok in health.items()]
        with self._lock:
            self._rows += [*rows, {"t_ms": t_ms, "service": "pipeline", "ok": pipeline_ok}]

    def _services(self) -> dict[str, bool]:
        backend = self.lab.backend
        if not hasattr(backend, "service"):  # compose/remote: their status() probes each service
            return {s.name: s.healthy for s in backend.status()}
        return {name: bool(backend.service(name).readiness().probe()) for name in SERVICE_NAMES}

    def _upload_answers(self) -> bool:
        try:
            return self._http.post(UPLOAD_PATH, content=b"").status_code == 400
        except httpx.HTTPError:
            return False


# ---------------------------------------------------------------- the environment


def environment(lab: Lab, spec: ExperimentSpec, started: datetime, finished: datetime,
                fault_windows: list[dict] | None = None) -> dict:
    """What a run needs to be understood and repeated: versions, machine, code, parameters, times."""
    status = lab.status()
    return {
        "experiment": spec.name, "policy": spec.policy_name, "fault": spec.fault_name, "seed": spec.seed,
        "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
        "versions": status["version"].to_dict(), "backend": lab.ctx.config.backend,
        "machine": {"platform": platform.platform(), "arch": platform.machine(), "cores": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "python": platform.python_version(), **git_revision(),
        "parameters": spec.model_dump(mode="json"), "fault_windows": fault_windows or [],
    }


def git_revision(repo: Path = REPO_DIR) -> dict[str, Any]:
    """``git_revision`` (the commit, or "unknown" outside a checkout) and ``git_dirty``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"git_revision": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_revision": "unknown", "git_dirty": None}


# ---------------------------------------------------------------- matrices


def run_matrix(lab: Lab, base: ExperimentSpec | Mapping | str | os.PathLike, axes: Mapping[str, Sequence[Any]],
               out_dir: str | os.PathLike, *, progress: bool = True) -> Run:
    """Run ``base`` once per combination of ``axes`` and concatenate the results.

    Axes: ``policy`` (a retry preset name or mapping, as ``retry``), ``fault`` (a fault preset
    name, or a list of faults), ``reconcile`` (true/false), or any field of the experiment
    by its dotted path (``load.rate_per_s``). Every combination is validated before the
    first one runs.

    Returns:
        A run whose tables hold every combination (``parts`` holds each one's run), saved
        under ``out_dir/<name>-matrix-<timestamp>/`` with each part in ``parts/``.

    Raises:
        LabConfigError: An unknown axis, an empty one, or an invalid combination.
    """
    base = load_spec(base)
    names = list(axes)
    for name in names:
        if not axes[name]:
            raise LabConfigError(f"matrix axis {name!r} has no values. Fix: give it at least one.")
    specs = [vary(base, dict(zip(names, combo, strict=True))) for combo in itertools.product(*(axes[n] for n in names))]
    started = datetime.now(UTC)
    run_dir = _new_dir(Path(out_dir), f"{base.name}-matrix-{started:%Y%m%dT%H%M%S}")
    parts = [run_experiment(lab, spec, run_dir / "parts", progress=progress) for spec in specs]
    results = pd.concat([p.results for p in parts], ignore_index=True)
    probes = pd.concat([p.probes.assign(policy=p.spec.policy_name, fault=p.spec.fault_name) for p in parts],
                       ignore_index=True)
    env = {**parts[-1].env, "started": started.isoformat(timespec="seconds"), "policy": None, "fault": None,
           "parameters": {"base": base.model_dump(mode="json"), "axes": _jsonable(axes)},
           "fault_windows": [w for p in parts for w in p.env["fault_windows"]],
           "runs": [p.run_dir.name for p in parts]}
    report.save_run(results, probes, env, run_dir)
    return Run(base, run_dir, results, probes, env, _concat([p.load for p in parts]),
               _concat([p.reconciliation for p in parts]), parts)


def vary(base: ExperimentSpec, changes: Mapping[str, Any]) -> ExperimentSpec:
    """``base`` with some fields changed (``policy``, ``fault``, ``reconcile`` or dotted paths), validated."""
    spec = base.model_dump()
    for name, value in changes.items():
        if name == "policy":
            spec["retry"] = value
            spec["policy_label"] = value if isinstance(value, str) else None
        elif name == "fault":
            spec["faults"] = value
            spec["fault_label"] = value if isinstance(value, str) else None
        else:
            _set_path(spec, name, value)
    return load_spec(spec)


def _set_path(spec: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise LabConfigError(f"matrix axis {path!r} names no field. Fix: use policy, fault, reconcile or a "
                                 f"field's dotted path such as load.rate_per_s.")
        node = node[part]
    if leaf not in node:
        raise LabConfigError(f"matrix axis {path!r} names no field. Fix: use policy, fault, reconcile or one of "
                             f"{', '.join(node)}.")
    node[leaf] = value


def _jsonable(axes: Mapping[str, Sequence[Any]]) -> dict:
    return {k: [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in vals] for k, vals in axes.items()}
