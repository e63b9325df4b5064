"""The lab's two vocabularies for a judgement, kept apart.

- An **SLA clause** (latency, availability) gets a verdict: PASS, FAIL or INCONCLUSIVE, and a
  verdict always travels with its n, its confidence and the n it would need (:func:`clause_facts`).
- A **check** (one probe, one service's measured availability against the target) is "met" or
  "not met" (:func:`check_word`): a measurement, not a claim about the SLA, so it never wears a
  PASS badge.

A report's headline is its weakest clause (:func:`weakest`): one FAIL makes the whole report
FAIL, and a PASS beside an INCONCLUSIVE clause is not a PASS.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final

from labkit.errors import LabConfigError

PASS: Final = "PASS"
FAIL: Final = "FAIL"
INCONCLUSIVE: Final = "INCONCLUSIVE"
# Weakest first: the headline of several clauses is the first of these that any clause has.
VERDICTS: Final = (FAIL, INCONCLUSIVE, PASS)
MET, NOT_MET = "met", "not met"


def weakest(statuses: Iterable[str]) -> str:
    """The weakest of some clause verdicts: FAIL before INCONCLUSIVE before PASS.

    Raises:
        LabConfigError: no verdicts, or a word that is not a clause verdict (such as "met").
    """
    given = list(statuses)
    unknown = sorted(set(given) - set(VERDICTS))
    if not given or unknown:
        raise LabConfigError(f"Need clause verdicts from {', '.join(VERDICTS)}; got {given or 'none'}.")
    return min(given, key=VERDICTS.index)


def check_word(met: bool) -> str:
    """The word for a check: "met" or "not met", never PASS or FAIL."""
    return MET if met else NOT_MET


def n_needed(violations: int, target: float, confidence: float = 0.95) -> int:
    """The fewest images that could support "share >= target" with this many violations
    and no more: the smallest n whose one-sided Clopper–Pearson lower bound on
    (n - violations) / n reaches the target. 299 with none at 99%/95%; each violation raises it."""
    from labkit.analysis.stats import clopper_pearson  # stats imports nothing of this module

    if violations < 0 or not 0 < target < 1:
        raise LabConfigError(f"need violations >= 0 and 0 < target < 1, got {violations}, {target}")

    def supports(n: int) -> bool:
        return clopper_pearson(n - violations, n, confidence)[0] >= target

    low, high = violations, max(violations + 1, math.ceil(math.log(1 - confidence) / math.log(target)))
    while not supports(high):  # the bound grows with n at fixed violations: double, then bisect
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if supports(mid) else (mid, high)
    return high


def describe_percentile(q: float, estimate_s: float, low_s: float, high_s: float, n: int,
                        confidence: float = 0.95) -> str:
    """One percentile with its distribution-free bounds, as a sentence: "p99 0.101 s (95% bounds
    0.076 s – ∞, n=20)". A bound the sample cannot give (infinite) reads ∞ or −∞."""
    def s(value: float) -> str:
        return ("−∞" if value < 0 else "∞") if math.isinf(value) else f"{value:.3f} s"

    return f"p{q * 100:g} {s(estimate_s)} ({confidence * 100:.4g}% bounds {s(low_s)} – {s(high_s)}, n={n})"


def clause_facts(n: int, confidence: float, needed: int, unit: str = "images") -> str:
    """The three facts every clause verdict carries, as one phrase."""
    return f"n={n} {unit}, {confidence * 100:.4g}% confidence, n needed {needed}"


# A PASS that is a clause verdict carries its facts close by (see clause_facts).
_CLAUSE_PASS = re.compile(r"\bPASS\b.{0,400}?n=\d+.{0,200}?confidence.{0,100}?n needed \d+", re.DOTALL)
# Where the vocabulary is defined (a report's legend), the word is marked <dfn>PASS</dfn>.
_DEFINITION = re.compile(r"<dfn>[A-Z]+</dfn>")


def pass_beside_weaker(text: str) -> bool:
    """True when ``text`` (plain or HTML) shows a PASS next to an INCONCLUSIVE or FAIL, other
    than a clause verdict that carries its own n, confidence and n needed (a per-group clause
    may PASS while the whole run does not) or the word's definition (``<dfn>PASS</dfn>``)."""
    plain = re.sub(r"<[^>]+>", " ", _DEFINITION.sub("", text))
    bare = _CLAUSE_PASS.sub("", plain)
    return bool(re.search(r"\bPASS\b", bare)) and bool(re.search(r"\b(?:INCONCLUSIVE|FAIL)\b", plain))
