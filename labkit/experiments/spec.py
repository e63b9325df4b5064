"""What an experiment is: a load, a fault schedule and a retry policy, declared and validated.

An experiment is declared in a small YAML file (``stack/experiments/*.yaml``) or a dict:

.. code-block:: yaml

    name: kafka-outage
    load: {kind: open, rate_per_s: 3, images: 12, max_duration_s: 30}
    faults: [{kind: stop, target: kafka, at_s: 1, duration_s: 8}]
    retry: exponential            # or none / fixed, or {upload: {...}, invoke: {...}}
    reconcile: true
    repetitions: 1
    seed: 7

:func:`load_spec` reads and validates one. A mistake is one :class:`~labkit.errors.LabConfigError`
on one line: each bad field, what was given, and how to fix it. The retry policy is the
pipeline's own (:mod:`labkit.pipeline.retry`).

Example:
    >>> load_spec("smoke").load.kind
    'open'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labkit.errors import LabConfigError
from labkit.experiments.faults import Fault, families, label, validate
from labkit.pipeline.retry import RetryHops, preset
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.versions import STACK_DIR

EXPERIMENTS_DIR = STACK_DIR / "experiments"


def _preset(value: Any, presets: Mapping[str, Any], kind: str) -> Any:
    """A preset's value when ``value`` names one; any other non-string as it is."""
    if not isinstance(value, str):
        return value
    if value not in presets:
        raise ValueError(f"unknown {kind} preset {value!r}; presets: {', '.join(presets)}")
    return presets[value]


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

    kind: str = Field(description="; ".join(f"{', '.join(names)} ({family})" for family, names in families().items()))
    target: str = Field(description=f"a service ({', '.join(SERVICE_NAMES)}) or a hop")
    at_s: float = Field(0.0, ge=0, le=3600, description="seconds after the load starts: [0, 3600]")
    duration_s: float = Field(5.0, gt=0, le=3600, description="how long the fault lasts: (0, 3600] s")
    params: dict[str, float] = Field(default_factory=dict, description="a network fault's parameters")

    @model_validator(mode="after")
    def _valid(self) -> FaultSpec:
        try:
            validate(self.fault())
        except LabConfigError as e:
            raise ValueError(str(e)) from e
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

    @field_validator("retry", mode="before")
    @classmethod
    def _retry_preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            preset(value)  # an unknown name is one error at ``retry``, not one per hop
        return value

    @property
    def policy_name(self) -> str:
        """The ``policy`` column: the retry policy's label, ``+ reconcile`` when reconciliation is on."""
        return (self.policy_label or self.retry.name()) + (" + reconcile" if self.reconcile else "")

    @property
    def fault_name(self) -> str:
        """The ``fault`` column: ``fault_label``, else the preset's name, else the faults' labels."""
        if self.fault_label:
            return self.fault_label
        found = next((n for n, f in FAULT_PRESETS.items() if f == self.faults), None)
        return found or "+".join(f"{label(f.fault())}:{f.duration_s:g}s" for f in self.faults)


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
        where, source = _read_yaml(_spec_path(source))
    try:
        return ExperimentSpec.model_validate(dict(source))
    except ValidationError as e:
        raise LabConfigError(_explain(where, e.errors())) from e


def _read_yaml(path: Path) -> tuple[str, Any]:
    """``(where, data)``: the file's name for messages, and its mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LabConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}. "
                             "Fix: check the indentation near that line.") from e
    if not isinstance(data, Mapping):
        raise LabConfigError(f"{path} must hold a mapping (name:, load:, ...), got {type(data).__name__}. "
                             "Fix: start from one of stack/experiments/*.yaml.")
    return str(path), data


def _spec_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if not path.exists() and not path.suffix and (EXPERIMENTS_DIR / f"{path}.yaml").exists():
        path = EXPERIMENTS_DIR / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise LabConfigError(f"No experiment file {source}. Fix: pass a YAML file's path, or one of: {known}.")
    return path


def _explain(where: str, errors: list[dict]) -> str:
    """The invalid fields on one line: where each is, what is wrong, what was given, how to fix it."""
    problems = []
    for e in errors:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ").rstrip(".")
        if e["type"] == "value_error":  # our own validators' messages already say what to do
            problems.append(f"- {loc}: {msg}.")
        elif e["type"] == "missing":
            problems.append(f"- {loc}: {msg}. Fix: {_hint(e)}.")
        else:
            problems.append(f"- {loc}: {msg} (got {e.get('input')!r:.80}). Fix: {_hint(e)}.")
    return f"{where} is invalid ({len(problems)} problem(s)): " + " ".join(problems)


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
    if error["type"] == "extra_forbidden":  # the unknown field sits in the last model reached
        return f"remove it; the valid fields here are {', '.join((model or parent).model_fields)}"
    if error["type"] == "missing":
        return f"add it: {described}" if described else "add it"
    return f"use {described}" if described else "see stack/experiments/README.md"
