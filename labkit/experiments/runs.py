"""The run skeleton on a lab: a run's metadata, its directory and tables, and what a finished run is.

Every runner (:func:`labkit.experiments.run.run_experiment`, its matrix, the benchmark, the
fault matrix) is "set up, drive load, inject, settle, classify, save", with its own middle.
The save is the same for all of them:

- :func:`lab_metadata`: :func:`labkit.core.runs.run_metadata` with the lab's service versions
  and backend; :func:`experiment_metadata` adds an experiment's names and parameters;
- :func:`save_experiment`: a new run directory (:func:`labkit.core.runs.new_run_dir`) holding
  ``results.csv``, ``probes.csv`` and ``env.json`` (:func:`labkit.analysis.report.save_run`);
- :class:`Run`: the finished run, its tables and where they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.analysis import report, sla
from labkit.core.runs import new_run_dir, run_metadata
from labkit.experiments.spec import ExperimentSpec
from labkit.stack.lab import Lab


def service_versions(lab: Lab) -> dict[str, str]:
    """Each service's version; empty when the lab cannot say (a status failure must not lose a run)."""
    try:
        return lab.status()["version"].to_dict()
    except Exception:  # noqa: BLE001 - any failure here only costs the versions, never the measurements
        return {}


def lab_metadata(lab: Lab, started: datetime, finished: datetime, *, seed: int | None,
                 labels: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """What a run on ``lab`` needs to be understood and repeated (see :func:`labkit.core.runs.run_metadata`)."""
    return run_metadata(started, finished, versions=service_versions(lab), backend=lab.ctx.config.backend,
                        seed=seed, labels=labels, **more)


def experiment_metadata(lab: Lab, spec: ExperimentSpec, started: datetime, finished: datetime,
                        fault_windows: list[dict] | None = None) -> dict[str, Any]:
    """An experiment's ``env.json``: its names, seed, parameters and fault windows, and the lab's metadata."""
    return lab_metadata(lab, started, finished, seed=spec.seed,
                        labels={"experiment": spec.name, "policy": spec.policy_name, "fault": spec.fault_name},
                        parameters=spec.model_dump(mode="json"), fault_windows=fault_windows or [])


def save_experiment(out_dir: str | os.PathLike, name: str, results: pd.DataFrame, probes: pd.DataFrame,
                    env: Mapping[str, Any]) -> Path:
    """Save a finished run in a new directory ``out_dir/name`` (or ``name-2``, ...); return it."""
    return report.save_run(results, probes, dict(env), new_run_dir(out_dir, name))


def concat(frames: Sequence[pd.DataFrame | None]) -> pd.DataFrame:
    """The non-empty frames, one under the other (an empty frame when there are none)."""
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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
