"""The SLA report of one run: a self-contained HTML page (and a PDF of it), plus the run's
tables on disk.

A run directory holds ``results.csv``, ``probes.csv`` and ``env.json`` (see :func:`save_run`).
The report is made from those three and nothing else, so it can be re-rendered at any time
with ``labkit report RUN_DIR``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from matplotlib.figure import Figure

from labkit.analysis import sla, verdicts
from labkit.analysis.results import with_current_statuses
from labkit.core.runs import public_env, save_tables
from labkit.errors import LabConfigError
from labkit.pipeline.fate import Fate
from labkit.pipeline.metrics import STAGES
from labkit.stack.config import LabConfig, load_config
from labkit.stack.secrets import SECRETS_FILE, load_or_create

RUN_FILES = ("results.csv", "probes.csv", "env.json")
FORMATS = ("html", "pdf")
PNG_DPI = 144


# --- run directories ------------------------------------------------------------------------


def save_run(results: pd.DataFrame, probes: pd.DataFrame, env: dict, run_dir: Path | str) -> Path:
    """Write a run's tables as ``results.csv``, ``probes.csv`` and ``env.json`` (secret-named
    env entries dropped, see :func:`public_env`), each atomically (:func:`labkit.core.runs.save_tables`).

    Returns:
        The run directory.
    """
    return save_tables(run_dir, {"results": results, "probes": probes}, env)


def load_run(run_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read back what :func:`save_run` wrote.

    Returns:
        ``(results, probes, env)``.

    Raises:
        LabConfigError: the directory or one of its files is missing or unreadable.
    """
    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        what = "does not exist" if not run_dir.is_dir() else f"lacks {', '.join(missing)}"
        raise LabConfigError(
            f"Run directory {run_dir} {what}. Fix: pass a directory written by "
            f"labkit.analysis.report.save_run (it holds {', '.join(RUN_FILES)})."
        )
    try:
        # Only empty cells are missing: a fault called "None" or "NA" stays a string.
        results = with_current_statuses(pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""]))
        probes = pd.read_csv(run_dir / "probes.csv", keep_default_na=False, na_values=[""])
        env = json.loads((run_dir / "env.json").read_text())
    except (ValueError, OSError) as e:
        raise LabConfigError(f"Run directory {run_dir} has an unreadable file ({e}). Fix: re-save the run.") from e
    return results, probes, env


# --- formatting -------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    """Seconds with two decimals; "∞" for an image that never finished or a bound the sample cannot give."""
    return ("−∞" if seconds < 0 else "∞") if math.isinf(seconds) else f"{seconds:.2f}"


def _fmt_pct(share: float, digits: int = 2) -> str:
    return f"{share * 100:.{digits}f}%"


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _flatten(env: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in public_env(env).items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            rows.append((f"{prefix}{key}", text))
    return rows


def _group_label(value: object) -> str:
    return " / ".join(map(str, value)) if isinstance(value, tuple) else str(value)


# --- the report's parts -----------------------------------------------------------------------


def _ecdf_figure(results: pd.DataFrame, threshold_s: float) -> Figure:
    """One row per fault: the whole ECDF, and a zoom on its top where the SLA is decided."""
    faults = sorted(results["fault"].astype(str).unique())
    fig = Figure(figsize=(12, 4.2 * len(faults)), layout="constrained")
    for row, (full, tail) in zip(faults, fig.subplots(len(faults), 2, squeeze=False, width_ratios=[3, 2])):
        rows = results[results["fault"].astype(str) == row]
        sla.ecdf_plot(rows, threshold_s, by="policy", ax=full)
        full.set_title(f"fault: {row}. End-to-end latency (unfinished images count as late)", fontsize="medium")
        sla.ecdf_plot(rows, threshold_s, by="policy", ax=tail)
        low = _tail_floor(rows)
        tail.set_ylim(low, 1 + (1 - low) / 20)
        tail.set_title(f"fault: {row}. The top {_fmt_pct(1 - low, 0)}, where the SLA is decided", fontsize="medium")
        tail.get_legend().remove()
    return fig


def _tail_floor(rows: pd.DataFrame) -> float:
    """Bottom of the tail zoom: 0.95, lowered (to 0.80 at most) so every policy's plateau shows."""
    finished_share = rows.groupby("policy")["status"].agg(lambda s: (s == Fate.RESIZED).mean()).min()
    return max(0.80, min(0.95, math.floor(finished_share * 100) / 100 - 0.01))


def _stage_figure(results: pd.DataFrame) -> Figure:
    groups = results.groupby(["policy", "fault"]).ngroups
    fig = Figure(figsize=(12, 1.6 + 0.5 * groups), layout="constrained")
    sla.stage_plot(results, by=["policy", "fault"], ax=fig.subplots())
    return fig


def _percentile_rows(results: pd.DataFrame) -> list[dict]:
    groups = [("all images", results), *((_group_label(k), g) for k, g in results.groupby(["policy", "fault"]))]
    rows = []
    for label, rows_of_group in groups:
        latency = sla.latencies_s(rows_of_group)
        table = sla.percentiles(latency)
        cells = [
            {"estimate": fmt_s(r.estimate), "ci": f"{fmt_s(r.low)} – {fmt_s(r.high)}"} for r in table.itertuples()
        ]
        rows.append({"group": label, "n": len(latency), "finished": int(np.isfinite(latency).sum()), "cells": cells})
    return rows


def _compliance_rows(results: pd.DataFrame, threshold_s: float) -> list[dict]:
    table = sla.compliance_by(results, ("policy", "fault"), threshold_s)
    return [
        {
            "group": f"{r['policy']} / {r['fault']}", "n": r["n"], "violations": r["violations"],
            "share": _fmt_pct(r["share"]), "lower": _fmt_pct(r["lower_bound"]), "n_needed": r["n_needed"],
            "status": r["status"], "verdict": r["verdict"],
            "facts": verdicts.clause_facts(r["n"], r["confidence"], r["n_needed"]),
        }
        for r in table.to_dict("records")
    ]


def _breakdown_rows(results: pd.DataFrame) -> list[dict]:
    table = sla.breakdown(results, by=["policy", "fault"])
    rows = []
    for key, g in table.groupby(["policy", "fault"], sort=True):
        by_stage = g.set_index(g["stage"].astype(str))
        cells = [
            f"{by_stage.at[s, 'median_ms']:.0f} / {by_stage.at[s, 'p95_ms']:.0f} / {by_stage.at[s, 'p99_ms']:.0f}"
            if s in by_stage.index else "–"
            for s in STAGES
        ]
        rows.append({"group": _group_label(key), "cells": cells})
    return rows


def _availability_rows(probes: pd.DataFrame, target: float) -> list[dict]:
    return [
        {
            "service": r["service"], "probes": r["probes"], "ok": r["ok"],
            "availability": _fmt_pct(r["availability"], 3), "burn": f"{r['error_budget_burn']:.2f}×",
            "outages": r.get("outages", "–"), "downtime": f"{r['downtime_s']:.1f}" if "downtime_s" in r else "–",
            "check": r["check"],
        }
        for r in sla.availability(probes, target).to_dict("records")
    ]


def _run_date(results: pd.DataFrame, env: dict) -> str:
    if env.get("started"):
        return f"{env['started']} – {env.get('finished', '?')}"
    first = pd.to_numeric(results.get("t_upload_start"), errors="coerce").min()
    if pd.isna(first):
        return "unknown"
    return datetime.fromtimestamp(first / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _context(results, probes, env, title, threshold_s, target, availability_target) -> dict:
    latency = sla.compliance(results, threshold_s, target)
    pipeline = sla.pipeline_availability(probes, availability_target)
    env_rows = _flatten({k: v for k, v in env.items() if k != "parameters"})
    return {
        "title": title,
        "headline": verdicts.weakest([latency["status"], pipeline["status"]]),
        "experiments": ", ".join(sorted(results["experiment"].astype(str).unique())),
        "run_date": _run_date(results, env),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "threshold_s": f"{threshold_s:g}",
        "target": sla._pct(target),
        "availability_target": sla._pct(availability_target),
        "confidence": sla._pct(latency["confidence"]),
        "latency": latency,
        "latency_facts": _latency_facts(latency),
        "pipeline": pipeline,
        "pipeline_facts": _pipeline_facts(pipeline, latency["confidence"]),
        "ecdf_png": _png(_ecdf_figure(results, threshold_s)),
        "stage_png": _png(_stage_figure(results)),
        "compliance_rows": _compliance_rows(results, threshold_s),
        "percentile_rows": _percentile_rows(results),
        "stages": [s.removesuffix("_ms") for s in STAGES],
        "breakdown_rows": _breakdown_rows(results),
        "accounting": sla.accounting(results).to_dict("records"),
        "availability_rows": _availability_rows(probes, availability_target),
        "parameters": _flatten(env.get("parameters", {})),
        "env_rows": env_rows,
    }


def _latency_facts(c: dict) -> list[tuple[str, str]]:
    return [
        ("images", str(c["n"])),
        (f"within {c['threshold_s']:g} s", f"{c['within']} ({_fmt_pct(c['share'])})"),
        ("late or unfinished", str(c["violations"])),
        (f"{sla._pct(c['confidence'])} lower bound", _fmt_pct(c["lower_bound"])),
        ("sample supports the claim", "yes" if c["supports_claim"] else "no"),
        ("n needed", f"{c['n_needed']} images with {c['violations']} violation(s); "
                     f"{c['min_samples_zero_violations']} with none"),
    ]


def _pipeline_facts(p: dict, confidence: float) -> list[tuple[str, str]]:
    facts = [
        ("probes", str(p["probes"])),
        ("failed", str(p["probes"] - p["ok"])),
        ("availability", _fmt_pct(p["availability"], 3)),
        ("outages", f"{p['outages']} ({p['downtime_s']:.1f} s down)" if "outages" in p else "–"),
        ("error budget burn", f"{p['error_budget_burn']:.2f}×"),
    ]
    if p["judged_on"] == "time":  # the outages are the events (labkit.analysis.uptime_clause)
        return facts + [
            ("window observed", f"{p['window_s']:.0f} s"),
            (f"{sla._pct(confidence)} bound on the time down", _fmt_pct(p["share_bound"], 3)),
            ("observation needed", f"{p['needed_s']} s with the same outages"),
        ]
    return facts + [
        (f"{sla._pct(confidence)} lower bound (probes as independent)", _fmt_pct(p["lower_bound"], 3)),
        ("n needed", f"{p['n_needed']} probes"),
    ]


def _template_env() -> Environment:
    return Environment(
        loader=PackageLoader("labkit.analysis", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _refuse_secrets(text: str, secrets: Iterable[str] | None) -> None:
    """Raise if any secret (or its HTML-escaped form) appears in ``text``; never names it."""
    secrets = [s for s in (secrets or []) if s]
    leaked = sum(1 for s in secrets if s in text or html.escape(s) in text)
    if leaked:
        raise LabConfigError(
            f"Refusing to write the report: {leaked} of the {len(secrets)} given secret(s) appear in it. "
            "Fix: remove them from the run's env/parameters or results (nothing was written)."
        )


def _write_pdf(page: str, path: Path) -> Path:
    try:
        import weasyprint
    except (ImportError, OSError) as e:  # OSError: the Pango system libraries are missing
        raise LabConfigError(
            f"The PDF needs WeasyPrint ({e}). Fix: `pip install weasyprint` and `apt-get install "
            "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0`, or ask for formats=('html',)."
        ) from e
    weasyprint.HTML(string=page).write_pdf(path)
    return path


def render_report(
    results: pd.DataFrame,
    probes: pd.DataFrame,
    env: dict,
    out_dir: Path | str,
    title: str = "Image pipeline SLA report",
    threshold_s: float = 10,
    formats: Sequence[str] = FORMATS,
    secrets: Iterable[str] | None = None,
    name: str = "report",
    target: float = 0.99,
    availability_target: float = 0.999,
) -> dict[str, Path]:
    """Render the run's SLA report as one self-contained HTML file and, if asked, a PDF of it.

    The HTML embeds its plots as base64 PNG and its CSS inline; it loads nothing and runs no
    script. Env entries named like a secret are left out (see :func:`public_env`).

    Args:
        results, probes, env: the run's tables (see :mod:`labkit.analysis.sla`) and environment.
        out_dir: created if needed; files are ``{name}.html`` and ``{name}.pdf``.
        formats: any of "html" and "pdf".
        secrets: values that must not appear; if one does, nothing is written.

    Returns:
        The path of each written format.

    Raises:
        LabConfigError: an unknown format, a secret in the output, malformed tables, or no
            WeasyPrint for the PDF.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise LabConfigError(f"Unknown report format(s) {sorted(unknown)}; choose from {FORMATS}.")
    context = _context(results, probes, env, title, threshold_s, target, availability_target)
    page = _template_env().get_template("report.html.j2").render(context)
    _refuse_secrets(page, secrets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if "html" in formats:
        written["html"] = out_dir / f"{name}.html"
        written["html"].write_text(page, encoding="utf-8")
    if "pdf" in formats:
        written["pdf"] = _write_pdf(page, out_dir / f"{name}.pdf")
    return written


def lab_secret_values(config: LabConfig) -> list[str]:
    """The lab's generated credentials, if this lab has any yet (never creates them)."""
    if not (config.data_dir / SECRETS_FILE).exists():
        return []
    return load_or_create(config.data_dir).secret_values()


def report_run(run_dir: Path | str, out_dir: Path | str = "reports", threshold_s: float | None = None) -> dict[str, Path]:
    """Render the report of a run directory, named after it, refusing to show the lab's secrets.

    Args:
        threshold_s: the SLA bound; ``LABKIT_SLA_THRESHOLD_S`` (10 s) when None.

    Raises:
        LabConfigError: the run directory is missing or invalid, or see :func:`render_report`.
    """
    config = load_config()
    results, probes, env = load_run(run_dir)
    return render_report(
        results, probes, env, out_dir,
        title=f"Image pipeline SLA report: {Path(run_dir).resolve().name}",
        threshold_s=config.sla_threshold_s if threshold_s is None else threshold_s,
        secrets=lab_secret_values(config),
        name=Path(run_dir).resolve().name,
    )
