"""The accounting invariant: after a run, every uploaded object is accounted for.

Each object in the source bucket ``dit247`` is in exactly one state, judged for its current
version (its ETag):

- ``resized``: its output is in ``dit247c``, made from this version;
- ``stale``: an output is there, but made from an older version of the key (the newer
  version's event was lost, or an older write won): the output shows the wrong image;
- ``dead_lettered``: the pipeline gave up on this version and said why (a metrics line of
  outcome ``error`` with a code, or a ``dit247-dlq`` record);
- ``pending``: younger than a grace period, so it may still be on its way;
- ``lost``: none of the above. Nothing downstream ever heard of it.

Lost and stale are failures: ``report.ok`` is False and ``labkit audit`` exits 1 on either, and
:func:`labkit.pipeline.reconcile.reconcile` is the cure for both. A key the action refuses
(an output key longer than S3 allows, say) is dead-lettered with the action's reason once the
flow has seen it; an audit never fails on a key, whatever it is.

A resized object with no metrics line at all is ``resized`` and also listed as
``unrecorded``: the image is safe, but its measurement is missing (reconcile re-records it).

The classification is :func:`labkit.pipeline.reconcile.reconcile`'s (dry run); this module only
names the states for an audit, adds the dead-letter reasons, the duplicates (the same version
recorded ``ok`` more than once: delivery is at least once; an upload again of the key is another
version, not a duplicate) and the superseded versions (replaced by a newer upload before they
were resized), and keeps the verdict.

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
        duplicates: Keys with a version recorded ``ok`` more than once -> how many ``ok`` lines those have.
        reasons: Dead-lettered keys -> the error code that put them there.
        unrecorded: Resized keys that no metrics line names, sorted.
        table: One row per source object: ``key, state, reason, etag`` (its current version) and
            ``made_from`` (the version its output was made from).
        stale: Keys in state ``stale``, sorted.
        superseded: Keys -> how many of their versions a newer upload replaced before they were resized.
    """

    prefix: str
    grace_s: float
    counts: dict[str, int]
    lost: list[str]
    duplicates: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    unrecorded: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    stale: list[str] = field(default_factory=list)
    superseded: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is lost or stale (pending objects are not a failure yet)."""
        return not self.lost and not self.stale

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "grace_s": self.grace_s, "counts": self.counts, "lost": self.lost,
                "stale": self.stale, "duplicates": self.duplicates, "superseded": self.superseded,
                "reasons": self.reasons, "unrecorded": self.unrecorded, "ok": self.ok}


def audit(lab: Lab, prefix: str = "", grace_s: float = DEFAULT_GRACE_S,
          record_grace_s: float = RECORD_GRACE_S) -> AuditReport:
    """Put every source object under ``prefix`` in exactly one state; nothing is republished.

    Args:
        lab: The running lab.
        prefix: Only keys starting with this (an experiment's run prefix).
        grace_s: Objects modified less than this ago are ``pending``, not ``lost``.
        record_grace_s: Outputs younger than this may still be getting their metrics line.

    Returns:
        The report; ``report.ok`` is False when something is lost or stale.

    Raises:
        LabConfigError: Too many objects match (narrow with ``prefix``).
        ServiceError: The store or Kafka refused.
    """
    found = reconcile(lab, republish=False, prefix=prefix, grace_s=grace_s, record_grace_s=record_grace_s)
    states = found["state"].replace({Fate.UNRECORDED.value: Fate.RESIZED.value})  # the image is safe; its line is not
    lines = [r for r in read_lines(metrics_path(lab)) if isinstance(r.get("key"), str) and r["key"].startswith(prefix)]
    dead = found[states == Fate.DEAD_LETTERED]
    reasons = _reasons(lines, dict(zip(dead["key"], dead["etag"], strict=True)))
    table = pd.DataFrame({"key": found["key"], "state": states, "reason": found["key"].map(reasons),
                          "etag": found["etag"], "made_from": found["made_from"]})
    counts = {state: int((states == state).sum()) for state in AUDIT_STATES}
    unrecorded = sorted(found.loc[found["state"] == Fate.UNRECORDED, "key"])
    return AuditReport(prefix, grace_s, counts, sorted(table.loc[states == Fate.LOST, "key"]),
                       _duplicates(lines), reasons, unrecorded, table,
                       stale=sorted(table.loc[states == Fate.STALE, "key"]), superseded=_superseded(lines))


def _reasons(lines: list[dict], dead: dict[str, str]) -> dict[str, str]:
    """Dead-lettered key -> the latest error code of its current version (``dlq`` when only a DLQ record names it).

    ``dead``: key -> its current ETag. A line that names no version speaks for any.
    """
    codes: dict[tuple[str, str | None], str] = {}
    for r in lines:
        if r.get("outcome") == Outcome.ERROR:
            codes[(r["key"], r.get("source_etag") or None)] = str(r.get("code") or "unknown")
    return {key: codes.get((key, dead[key]), codes.get((key, None), "dlq")) for key in sorted(dead)}


def _duplicates(lines: list[dict]) -> dict[str, int]:
    """Keys with a version recorded ``ok`` more than once -> how many ``ok`` lines those versions have.

    A version is one upload: its trace id and its ETag. Delivery is at least once, so the same
    version can come through twice; an upload again of the key is another version, not a duplicate.
    """
    ok = Counter((r["key"], r.get("trace_id"), r.get("source_etag")) for r in lines if r.get("outcome") == Outcome.OK)
    found: Counter[str] = Counter()
    for (key, _trace_id, _etag), n in ok.items():
        if n > 1:
            found[key] += n
    return dict(sorted(found.items()))


def _superseded(lines: list[dict]) -> dict[str, int]:
    """Keys -> how many of their versions were superseded (counted once per version)."""
    versions = {(r["key"], r.get("source_etag"), r.get("trace_id")) for r in lines
                if r.get("outcome") == Outcome.SUPERSEDED}
    return dict(sorted(Counter(key for key, _etag, _trace_id in versions).items()))


def failure_message(report: AuditReport) -> str:
    """What to say when ``report`` has lost or stale objects: how many, and the cure."""
    found = []
    if report.lost:
        found.append(f"{len(report.lost)} object(s) in dit247 are LOST (no output, no dead letter)")
    if report.stale:
        found.append(f"{len(report.stale)} are STALE (their output is of an older version)")
    return (f"{' and '.join(found)}, older than {report.grace_s:g} s. Fix: `{CURE}` (prefix={report.prefix!r}) "
            "republishes their events; then audit again.")

