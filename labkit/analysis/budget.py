"""Error budgets and burn rates: the SRE side of the SLO "99% of images within 10 s".

The error budget is what the SLO allows to go wrong over its window: ``1 - SLO`` of the
window's time (99.9% of 30 days is 43.2 min) or of its images (99% of 10 000 images is
100 images). The burn rate is how fast a window spends it: error rate / (1 - SLO); at 1 the
budget lasts exactly the SLO window.

The flow's burn-rate alert (``stack/nodered/nodes/labkit-pipeline-steps/burnrate.js``) and this
module read the same rules, the Google SRE workbook's multiwindow, multi-burn-rate alerts
(``burn-policies.json`` beside it), and scale every window down by the same factor; so a table of
metrics lines (:func:`labkit.pipeline.metrics.load_metrics`) replayed here says which rule held
when, next to the mails the flow sent.

Example:
    >>> error_budget(0.999, days=30).minutes
    43.2
    >>> error_budget(0.99, images=10_000).images
    100.0
    >>> round(burn_rate(bad=5, images=100, slo=0.99), 9)
    5.0
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from labkit.stack.versions import STACK_DIR

POLICY_FILE = STACK_DIR / "nodered" / "nodes" / "labkit-pipeline-steps" / "burn-policies.json"
_POLICY = json.loads(POLICY_FILE.read_text())
#: The workbook's SLO window, seconds (30 days).
SLO_WINDOW_S: float = _POLICY["slo_window_s"]
#: The flow's defaults: SLO, SLA threshold (ms), window scale, bad images a rule needs in its long window.
DEFAULTS: dict[str, float] = dict(_POLICY["defaults"])


@dataclass(frozen=True)
class BurnRule:
    """One rule: fires when the burn rate is over ``burn_rate`` in both windows.

    Attributes:
        severity: ``page`` or ``ticket``.
        long_s, short_s: The windows, seconds.
        burn_rate: The threshold.
        budget: The share of the SLO window's budget that a firing long window has spent.
    """

    severity: str
    long_s: float
    short_s: float
    burn_rate: float
    budget: float

    def scaled(self, scale: float) -> BurnRule:
        """This rule with both windows divided by ``scale`` (a lab run of minutes)."""
        return BurnRule(self.severity, self.long_s / scale, self.short_s / scale, self.burn_rate, self.budget)


#: The workbook's rules for a 30-day SLO, unscaled.
BURN_RULES: tuple[BurnRule, ...] = tuple(BurnRule(**r) for r in _POLICY["rules"])


@dataclass(frozen=True)
class Budget:
    """An error budget: ``minutes`` of the window, and ``images`` when the window's traffic is given."""

    slo: float
    window_s: float
    minutes: float
    images: float | None


def error_budget(slo: float, days: float = 30, images: int | None = None) -> Budget:
    """The error budget of ``slo`` over ``days``, in minutes and (given the window's traffic) images.

    Raises:
        ValueError: ``slo`` is not in (0, 1).
    """
    if not 0 < slo < 1:
        raise ValueError(f"an SLO is a share in (0, 1), got {slo}")
    window_s = days * 86400
    return Budget(slo, window_s, round((1 - slo) * window_s / 60, 9),
                  None if images is None else round((1 - slo) * images, 9))


def burn_rate(bad: int, images: int, slo: float) -> float:
    """Error rate / (1 - SLO); 0 for a window without images."""
    return (bad / images if images else 0.0) / (1 - slo)


def sli(frame: pd.DataFrame, sla_ms: float = DEFAULTS["sla_ms"]) -> pd.Series:
    """Each metrics line as the flow counts it: ``good`` (ok, under ``sla_ms``), ``bad`` (ok at
    or over it, failed, or never finished) or None (superseded versions, malformed records)."""
    outcome = frame["outcome"].astype(object)
    duration = pd.to_numeric(frame["duration_ms"], errors="coerce")
    good = (outcome == "ok") & (duration < sla_ms)
    uncounted = outcome.isin(["superseded", "malformed"])
    return pd.Series(["good" if g else None if u else "bad" for g, u in zip(good, uncounted)], index=frame.index,
                     dtype=object)


def recorded_ms(frame: pd.DataFrame) -> pd.Series:
    """When each line was recorded, about (epoch ms): ``t_done``, else ``t_failed``, else its last stamp."""
    stamps = [c for c in ("t_done", "t_failed", "t_webhook", "t_action_end", "t_invoke_start", "t_event") if c in frame]
    return frame[stamps].apply(pd.to_numeric, errors="coerce").bfill(axis=1).iloc[:, 0]


def burn_rates(frame: pd.DataFrame, at_ms: float | None = None, slo: float = DEFAULTS["slo"],
               sla_ms: float = DEFAULTS["sla_ms"], scale: float = DEFAULTS["scale"],
               min_bad: int = DEFAULTS["min_bad"]) -> pd.DataFrame:
    """Each rule's two windows ending at ``at_ms`` (default: the last line recorded), as the flow
    checks them.

    Args:
        frame: Metrics lines (``outcome``, ``duration_ms`` and the stamps).
        at_ms: The windows' end, epoch ms.
        slo, sla_ms, scale, min_bad: The flow's settings (``BURN_SLO``, ``SLA_THRESHOLD_MS``,
            ``BURN_WINDOW_SCALE``, ``BURN_MIN_BAD``).

    Returns:
        One row per rule: ``severity, long_s, short_s`` (scaled), ``threshold``, ``long_images,
        long_bad, long_burn, short_images, short_bad, short_burn`` and ``firing``.
    """
    kind, t = sli(frame, sla_ms), recorded_ms(frame)
    counted = kind.notna() & t.notna()
    kind, t = kind[counted], t[counted]
    end = float(t.max()) if at_ms is None and len(t) else (at_ms or 0.0)
    rows = []
    for rule in (r.scaled(scale) for r in BURN_RULES):
        row = {"severity": rule.severity, "long_s": rule.long_s, "short_s": rule.short_s, "threshold": rule.burn_rate}
        for name, span_s in (("long", rule.long_s), ("short", rule.short_s)):
            inside = (t > end - span_s * 1000) & (t <= end)
            images, bad = int(inside.sum()), int((inside & (kind == "bad")).sum())
            row |= {f"{name}_images": images, f"{name}_bad": bad, f"{name}_burn": burn_rate(bad, images, slo)}
        row["firing"] = (row["long_burn"] > rule.burn_rate and row["short_burn"] > rule.burn_rate
                         and row["long_bad"] >= min_bad)
        rows.append(row)
    return pd.DataFrame(rows)


#: Each alert policy's mails, by subject: the per-image SLA e-mail, and the burn-rate alert's
#: page and ticket (its ``resolved`` notices end an episode and are no alerts).
POLICY_SUBJECTS = {"per-image": r"^SLA alert: ", "burn-rate": r"^\[burn-rate\] (?:page|ticket): "}


def alert_comparison(mails: list[dict], faults: pd.DataFrame, grace_s: float = 60.0) -> pd.DataFrame:
    """The two alert policies side by side on one fault schedule: what each sent, and when.

    An alert sent while a fault was in force, or up to ``grace_s`` after it ended (the images it
    slowed finish late), belongs to that fault: the first one detects it, the others are
    redundant. An alert outside every fault's span is false.

    Args:
        mails: Mailpit's message summaries (:meth:`labkit.stack.services.mail.Mailbox.messages`):
            ``Subject`` and ``Created``.
        faults: The schedule's fault windows (:meth:`~labkit.experiments.faults.schedule.Schedule.windows`):
            ``start_ms`` and ``end_ms`` (epoch ms; None while in force).
        grace_s: How long after a fault its alerts still count as its own.

    Returns:
        One row per policy: ``policy, alerts, detected`` (faults with an alert), ``faults``,
        ``detect_s`` (mean seconds from a fault's start to its first alert; NaN if none),
        ``redundant, false``.
    """
    sent = pd.DataFrame(mails, columns=["Subject", "Created"])
    created = pd.to_datetime(sent["Created"], utc=True, format="ISO8601")
    sent_ms = (created - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)
    spans = [(float(f.start_ms), float("inf") if pd.isna(f.end_ms) else float(f.end_ms) + grace_s * 1000)
             for f in faults.itertuples()]
    rows = []
    for policy, pattern in POLICY_SUBJECTS.items():
        times = sorted(sent_ms[sent["Subject"].str.contains(pattern, regex=True)].tolist())
        firsts = [next((t for t in times if start <= t <= end), None) for start, end in spans]
        owned = [t for t in times if any(start <= t <= end for start, end in spans)]
        delays = [(t - start) / 1000 for t, (start, _) in zip(firsts, spans) if t is not None]
        rows.append({"policy": policy, "alerts": len(times), "detected": len(delays), "faults": len(spans),
                     "detect_s": sum(delays) / len(delays) if delays else float("nan"),
                     "redundant": len(owned) - len(delays), "false": len(times) - len(owned)})
    return pd.DataFrame(rows)
