"""The 99.9% uptime clause judged on time, with outages as the independent events.

Counting probes as independent trials (a Clopper–Pearson bound on the share of probes up) is
optimistic: a pipeline that is down at one probe is almost surely down half a second later, so one
outage seen by ten probes is one event, not ten, and more probes per second would make that bound
tighter without any more evidence. :func:`labkit.analysis.sla.pipeline_availability` (the SLA
report's clause) and notebook 10 judge the clause here; the probe-count bound is kept only for
comparison and for probes without times.

Here the evidence is counted the way it arrives:

- **the measure** is time: downtime (each failed probe stands for one probe spacing,
  :func:`labkit.analysis.uptime.outages`) over the observed window;
- **the independent events** are the outages, modelled as a Poisson process: with ``k`` outages
  in a window of ``W`` s, the one-sided upper bound on their rate is ``U(k) / W``, where ``U`` is
  the exact (Garwood) Poisson upper limit, ``chi2.ppf(confidence, 2k + 2) / 2``: 3.0 at ``k = 0``;
- **the bound on the downtime share** is ``U(k) × d / W``, where ``d`` is the longest outage seen
  (one probe spacing when none was: a longer one would have been seen). That rests on one stated
  assumption, that outages to come last no longer than the longest seen.

The verdict follows the lab's rule for a share clause (docs/teaching.md):

- **FAIL** when the measured downtime share is above ``1 - target`` (the availability seen is below it);
- **PASS** when the upper bound on the downtime share is within ``1 - target``;
- **INCONCLUSIVE** otherwise, with the window it would take (at the same outages per second and
  the same longest outage) to decide.

Example:
    >>> round(poisson_upper(0), 3)          # no outage in the window: at most 3.0 expected, at 95%
    2.996
    >>> judge(downtime_s=0, outages=0, longest_s=0, window_s=600, spacing_s=0.5)["status"]
    'INCONCLUSIVE'
    >>> judge(downtime_s=0, outages=0, longest_s=0, window_s=600, spacing_s=0.5)["needed_s"]
    1498
"""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import chi2

from labkit.analysis import uptime, verdicts
from labkit.errors import LabConfigError


def poisson_upper(k: int, confidence: float = 0.95) -> float:
    """The exact one-sided upper bound on a Poisson mean after seeing ``k`` events (Garwood)."""
    if k < 0 or not 0 < confidence < 1:
        raise LabConfigError(f"need k >= 0 and 0 < confidence < 1, got k={k}, confidence={confidence}")
    return float(chi2.ppf(confidence, 2 * k + 2) / 2)


def judge(downtime_s: float, outages: int, longest_s: float, window_s: float, spacing_s: float,
          target: float = 0.999, confidence: float = 0.95) -> dict:
    """The uptime clause's verdict from one window's downtime and outages.

    Args:
        downtime_s: Time down in the window.
        outages: Independent outage events in it.
        longest_s: The longest outage's downtime (0 when none).
        window_s: The observed window.
        spacing_s: The probes' spacing: the longest outage that can go unseen.
        target: The clause (0.999).
        confidence: Of the bound.

    Returns:
        ``status``, ``availability`` (time-weighted), ``downtime_share``, ``share_bound`` (upper
        bound on the downtime share), ``outages``, ``window_s``, ``needed_s`` (the window that
        could decide), ``confidence``, ``target`` and ``verdict`` (a sentence with n, the
        confidence and the n needed).

    Raises:
        LabConfigError: a window that is not positive, a negative count or time, or a target
            outside (0, 1).
    """
    if window_s <= 0 or outages < 0 or downtime_s < 0 or not 0 < target < 1:
        raise LabConfigError(f"need window_s > 0, outages >= 0, downtime_s >= 0 and 0 < target < 1; got "
                             f"{window_s}, {outages}, {downtime_s}, {target}")
    share = downtime_s / window_s
    per_outage = max(longest_s, spacing_s)
    expected = poisson_upper(outages, confidence) * per_outage
    bound = min(1.0, expected / window_s)
    needed_s = math.ceil(expected / (1 - target))
    status = (verdicts.FAIL if share > 1 - target else verdicts.PASS if bound <= 1 - target
              else verdicts.INCONCLUSIVE)
    row = {"status": status, "availability": 1 - share, "downtime_share": share, "share_bound": bound,
           "outages": int(outages), "downtime_s": float(downtime_s), "longest_s": float(longest_s),
           "window_s": float(window_s), "needed_s": needed_s, "confidence": confidence, "target": target}
    return row | {"verdict": _sentence(row)}


def _sentence(row: dict) -> str:
    facts = (f"n={row['outages']} outage events over {row['window_s']:.0f} s, {row['confidence'] * 100:.4g}% "
             f"confidence, n needed {row['needed_s']} s of observation with the same outages")
    seen = (f"up {row['availability']:.3%} of the time ({row['downtime_s']:.1f} s down in "
            f"{row['window_s']:.0f} s, {row['outages']} outage(s))")
    goal = f"{row['target']:.1%}"
    if row["status"] == verdicts.FAIL:
        return f"FAIL: {seen}, below {goal} ({facts})."
    if row["status"] == verdicts.PASS:
        return (f"PASS: {seen}; the {row['confidence']:.0%} bound on the time down is "
                f"{row['share_bound']:.3%}, within {1 - row['target']:.1%} ({facts}).")
    return (f"INCONCLUSIVE: {seen}, but the {row['confidence']:.0%} bound on the time down is "
            f"{row['share_bound']:.3%}, more than the {1 - row['target']:.1%} the clause allows ({facts}).")


def judge_probes(probes: pd.DataFrame, service: str = "pipeline", target: float = 0.999,
                 confidence: float = 0.95) -> dict:
    """:func:`judge` on one service's probes (``t_ms, service, ok``): its outages, downtime and window.

    Raises:
        LabConfigError: no probes of ``service``.
    """
    mine = probes[probes["service"] == service]
    if mine.empty:
        raise LabConfigError(f"no probes of {service!r}. Fix: probe it (labkit.experiments.prober).")
    cut = uptime.outages(mine, service)
    spacing = uptime.probe_spacing_s(mine)
    window_s = (mine["t_ms"].max() - mine["t_ms"].min()) / 1000 + spacing
    return judge(float(cut["downtime_s"].sum()), len(cut), float(cut["downtime_s"].max()) if len(cut) else 0.0,
                 float(window_s), spacing, target, confidence)
