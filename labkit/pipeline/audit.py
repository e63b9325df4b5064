"""The accounting invariant: after a run, every uploaded object is accounted for.

Each object in the source bucket ``dit247`` is in exactly one state:

- ``resized``: its output is in ``dit247c``;
- ``dead_lettered``: the pipeline gave up on it and said why (a metrics line of outcome
  ``error`` with a code, or a ``dit247-dlq`` record);
- ``pending``: younger than a grace period, so it may still be on its way;
- ``lost``: none of the above. Nothing downstream ever heard of it.

A resized object with no metrics line at all is ``resized`` and also listed as
``unrecorded``: the image is safe, but its measurement is missing (reconcile re-records it).

The classification is :func:`labkit.pipeline.reconcile.reconcile`'s (dry run); this module only
names the states for an audit, adds the dead-letter reasons and the duplicates (keys with
more than one ``ok`` metrics line: delivery is at least once), and keeps the verdict.

Example:
    >>> report = audit(lab, prefix="exp/run1/")     # doctest: +SKIP
    >>> report.lost                                  # doctest: +SKIP
    []
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from labkit.pipeline.fate import AUDITED, Fate, Outcome
from labkit.pipeline.metrics import metrics_path, read_lines
from labkit.pipeline.reconcile import RECORD_GRACE_S, reconcile
from labkit.stack.lab import Lab

AUDIT_STATES = tuple(str(fate) for fate in AUDITED)
DEFAULT_GRACE_S = 60.0
CURE = "labkit.pipeline.reconcile.reconcile(lab)"


@dataclass(frozen=True)
class AuditReport:
    """The audit of one prefix of ``dit247``.

    Attributes:
        prefix: The key prefix audited ("" for the whole bucket).
        grace_s: Objects younger than this counted as pending.
        counts: Objects per state (every state of ``AUDIT_STATES``, zeros included).
        lost: Keys in state ``lost``, sorted.
        duplicates: Keys with more than one ``ok`` metrics line -> how many.
        reasons: Dead-lettered keys -> the error code that put them there.
        unrecorded: Resized keys that no metrics line names, sorted.
        table: One row per source object: ``key, state, reason``.
    """

    prefix: str
    grace_s: float
    counts: dict[str, int]
    lost: list[str]
    duplicates: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    unrecorded: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing is lost (pending objects are not a failure yet)."""
        return not self.lost

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "grace_s": self.grace_s, "counts": self.counts, "lost": self.lost,
                "duplicates": self.duplicates, "reasons": self.reasons, "unrecorded": self.unrecorded,
                "ok": self.ok}


def audit(lab: Lab, prefix: str = "", grace_s: float = DEFAULT_GRACE_S,
          record_grace_s: float = RECORD_GRACE_S) -> AuditReport:
    """Put every source object under ``prefix`` in exactly one state; nothing is republished.

    Args:
        lab: The running lab.
        prefix: Only keys starting with this (an experiment's run prefix).
        grace_s: Objects modified less than this ago are ``pending``, not ``lost``.
        record_grace_s: Outputs younger than this may still be getting their metrics line.

    Returns:
        The report; ``report.ok`` is False when something is lost.

    Raises:
        LabConfigError: Too many objects match (narrow with ``prefix``).
        ServiceError: The store or Kafka refused.
    """
    found = reconcile(lab, republish=False, prefix=prefix, grace_s=grace_s, record_grace_s=record_grace_s)
    states = found["state"].replace({Fate.UNRECORDED.value: Fate.RESIZED.value})  # the image is safe; its line is not
    lines = [r for r in read_lines(metrics_path(lab)) if isinstance(r.get("key"), str) and r["key"].startswith(prefix)]
    reasons = _reasons(lines, set(found.loc[states == Fate.DEAD_LETTERED, "key"]))
    table = pd.DataFrame({"key": found["key"], "state": states, "reason": found["key"].map(reasons)})
    counts = {state: int((states == state).sum()) for state in AUDIT_STATES}
    unrecorded = sorted(found.loc[found["state"] == Fate.UNRECORDED, "key"])
    return AuditReport(prefix, grace_s, counts, sorted(table.loc[states == Fate.LOST, "key"]),
                       _duplicates(lines), reasons, unrecorded, table)


def _reasons(lines: list[dict], dead: set[str]) -> dict[str, str]:
    """Dead-lettered key -> its latest error code (``dlq`` when only a DLQ record names it)."""
    codes = {r["key"]: str(r.get("code") or "unknown") for r in lines if r.get("outcome") == Outcome.ERROR}
    return {key: codes.get(key, "dlq") for key in sorted(dead)}


def _duplicates(lines: list[dict]) -> dict[str, int]:
    """Keys with more than one ``ok`` metrics line -> how many (at-least-once delivery)."""
    ok = Counter(r["key"] for r in lines if r.get("outcome") == Outcome.OK)
    return {key: n for key, n in sorted(ok.items()) if n > 1}


def lost_message(report: AuditReport) -> str:
    """What to say when ``report`` has lost objects: how many, and the cure."""
    return (f"{len(report.lost)} object(s) in dit247 are LOST: no output, no dead letter, older than "
            f"{report.grace_s:g} s. Fix: `{CURE}` (prefix={report.prefix!r}) republishes their events; "
            "then audit again.")
