"""Graded exercises: a student's function checked against labkit's reference, with feedback that
says what to look at, not only that something is wrong.

The student writes a function in a marked cell of a notebook; the check cell after it calls one
of these graders and asserts on the result, so a wrong answer stops the notebook with the hints.

Example:
    >>> def pages(long_bad, long_images, short_bad, short_images):
    ...     return long_bad >= 3
    >>> grade = check_page_rule(pages)
    >>> grade.passed, grade.score < grade.out_of
    (False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from labkit.analysis.budget import BURN_RULES, DEFAULTS, burn_rate

PAGE = BURN_RULES[0]  # page at 14.4 over 1 h and 5 min (scaled: 1 min and 5 s)


@dataclass(frozen=True)
class Case:
    """One question to the student's function: the windows' counts, the right answer, and a hint
    for when the answer is wrong."""

    long_bad: int
    long_images: int
    short_bad: int
    short_images: int
    expected: bool
    hint: str
    source: str = "made up"


@dataclass(frozen=True)
class Grade:
    """``score`` of ``out_of`` cases right; ``wrong`` lists the cases missed with their hints."""

    score: int
    out_of: int
    wrong: list[tuple[Case, object]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.score == self.out_of

    @property
    def feedback(self) -> str:
        """Markdown: the score, and each distinct hint once with one example case."""
        if self.passed:
            return f"**{self.score} of {self.out_of} cases right.** Your rule pages exactly when the flow's does."
        lines = [f"**{self.score} of {self.out_of} cases right.**"]
        hints: dict[str, tuple[Case, object]] = {}
        for case, answer in self.wrong:
            hints.setdefault(case.hint, (case, answer))
        for hint, (case, answer) in hints.items():
            lines.append(f"- long window {case.long_bad} bad of {case.long_images}, short {case.short_bad} of "
                         f"{case.short_images} ({case.source}): you answered `{answer!r}`, the rule says "
                         f"`{case.expected}`. {hint}")
        return "\n".join(lines)


def made_up_cases(slo: float = DEFAULTS["slo"], min_bad: int = DEFAULTS["min_bad"]) -> list[Case]:
    """The corners a page rule must get right."""
    t = PAGE.burn_rate
    return [
        Case(0, 0, 0, 0, False, "A window without images has burn rate 0: no images, nothing burnt (and no division by zero)."),
        Case(1, 4, 1, 1, False, f"One slow image among a few is a huge error rate; the rule also needs at least "
             f"BURN_MIN_BAD = {min_bad} bad images in the long window."),
        Case(2, 2, 2, 2, False, f"Every image bad, but only 2: still fewer than BURN_MIN_BAD = {min_bad}."),
        Case(30, 100, 0, 5, False, "The long window burns, but the short one is clean: the short window is there "
             "so that the page stops soon after the problem does. Both windows must be over the threshold."),
        Case(3, 100, 3, 3, False, f"The short window burns, but 3 of 100 in the long window is a burn rate of "
             f"{burn_rate(3, 100, slo):g}, under {t}: a short blip alone must not page."),
        Case(20, 100, 2, 10, True, f"20 of 100 is a burn rate of {burn_rate(20, 100, slo):g} and 2 of 10 of "
             f"{burn_rate(2, 10, slo):g}, both over {t}: this pages. Burn rate = (bad / images) / (1 - SLO)."),
        Case(14, 100, 1, 1, False, f"14 of 100 is a burn rate of {burn_rate(14, 100, slo):g}, just under {t}: "
             "the rule fires only over the threshold."),
        Case(15, 100, 1, 1, True, f"15 of 100 is a burn rate of {burn_rate(15, 100, slo):g}, just over {t}, and "
             "the short window burns too: this pages."),
    ]


def measured_cases(runs: Iterable[tuple[str, pd.DataFrame]]) -> list[Case]:
    """The page rule's windows as the flow saw them at each image a run recorded, with what the
    flow's rule (replayed by :func:`labkit.analysis.budget.burn_rates`) decided there.

    Args:
        runs: ``(name, metrics rows)`` of each run.
    """
    from labkit.analysis.budget import burn_rates, recorded_ms

    cases = []
    for name, images in runs:
        for at in recorded_ms(images).dropna().sort_values():
            row = burn_rates(images, at_ms=float(at)).iloc[0]
            hint = ("Here the flow paged: the windows held enough bad images, over the threshold in both."
                    if row["firing"] else "Here the flow stayed silent.")
            cases.append(Case(int(row["long_bad"]), int(row["long_images"]), int(row["short_bad"]),
                              int(row["short_images"]), bool(row["firing"]), hint, f"measured, {name}"))
    return cases


def check_page_rule(pages: Callable[[int, int, int, int], bool],
                    runs: Iterable[tuple[str, pd.DataFrame]] = ()) -> Grade:
    """Grade ``pages(long_bad, long_images, short_bad, short_images)``: does it say True exactly
    where the flow's first page rule fires (SLO 99%, burn rate over 14.4 in both windows, at
    least ``BURN_MIN_BAD`` bad images in the long one)?

    Args:
        pages: The student's rule.
        runs: Measured runs to replay as further cases (see :func:`measured_cases`).
    """
    cases = made_up_cases() + measured_cases(runs)
    wrong = []
    for case in cases:
        try:
            answer = pages(case.long_bad, case.long_images, case.short_bad, case.short_images)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, with its message as feedback
            answer = f"{type(e).__name__}: {e}"
        if answer is not case.expected and answer != case.expected:
            wrong.append((case, answer))
    return Grade(len(cases) - len(wrong), len(cases), wrong)
