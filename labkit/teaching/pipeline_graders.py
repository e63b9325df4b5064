"""Graders of the exercises whose code runs inside the pipeline (through :mod:`labkit.teaching.hooks`):
the upload's backoff policy (notebook 06) and the resize action's size policy (notebook 02).

Each exercise is graded twice: on made-up cases (the function alone, against labkit's reference),
and on what the pipeline did with it (the hook's run). Each grade is a list of checks, each with a
hint that says what to fix.

Example:
    >>> import random
    >>> def backoff(k):
    ...     return None if k >= 10 else random.uniform(0, min(2.0, 0.1 * 2 ** k))
    >>> check_backoff_policy(backoff, 10, 0.1, 2.0).passed
    True
    >>> check_size_policy(reference_size).passed
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from labkit.teaching.hooks import BackoffRun, ResizeRun

DRAWS = 300  # calls per retry number: a policy that jitters over its whole range cannot look fixed
WIDTH_PX = 320  # the size policy's output width


@dataclass(frozen=True)
class Check:
    """One thing the grader looked at: whether it held, and what to do when it did not."""

    name: str
    ok: bool
    hint: str = ""


@dataclass(frozen=True)
class CheckGrade:
    """The checks of one grading cell; ``done`` is what a full score says."""

    checks: list[Check] = field(default_factory=list)
    done: str = ""

    @property
    def score(self) -> int:
        return sum(c.ok for c in self.checks)

    @property
    def out_of(self) -> int:
        return len(self.checks)

    @property
    def passed(self) -> bool:
        return self.score == self.out_of

    @property
    def feedback(self) -> str:
        """Markdown: the score, then each failed check with its hint."""
        head = f"**{self.score} of {self.out_of} checks passed.**"
        if self.passed:
            return f"{head} {self.done}"
        return "\n".join([head, *[f"- {c.name}: {c.hint}" for c in self.checks if not c.ok]])


def _calls(fn: Callable, *args) -> tuple[list, str | None]:
    """``DRAWS`` answers of ``fn(*args)``, or the error it raised."""
    try:
        return [fn(*args) for _ in range(DRAWS)], None
    except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, its message the feedback
        return [], f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------ backoff (notebook 06)


def backoff_bound(k: int, base_s: float, cap_s: float) -> float:
    """The longest sleep after the k-th failed attempt: ``min(cap_s, base_s * 2**k)``."""
    return min(cap_s, base_s * 2 ** k)


def reference_backoff(k: int, max_attempts: int = 10, base_s: float = 0.1, cap_s: float = 2.0,
                      rng: np.random.Generator | None = None) -> float | None:
    """Exponential backoff with full jitter: give up after ``max_attempts`` attempts in all, else
    sleep a uniform random time in ``[0, min(cap_s, base_s * 2**k)]``."""
    if k >= max_attempts:
        return None
    return float((rng or np.random.default_rng()).uniform(0, backoff_bound(k, base_s, cap_s)))


def check_backoff_policy(backoff: Callable[[int], float | None], max_attempts: int, base_s: float,
                         cap_s: float) -> CheckGrade:
    """Call ``backoff(k)`` ``DRAWS`` times for every retry k and check each answer: a number within
    the bound until the last attempt, None from then on, and spread over the whole range."""
    checks = []
    for k in range(1, max_attempts + 3):
        answers, error = _calls(backoff, k)
        where = f"backoff({k})"
        if error:
            checks.append(Check(where, False, f"raised {error}."))
            continue
        if k >= max_attempts:
            checks.append(Check(f"{where} gives up", all(a is None for a in answers),
                                f"answered {answers[0]!r}; after {max_attempts} failed attempts (MAX_ATTEMPTS, the "
                                "first one included) return None: no attempt beyond the cap."))
            continue
        if any(a is None for a in answers):
            checks.append(Check(f"{where} retries", False,
                                f"gave up (None) after {k} attempts; give up only once k reaches MAX_ATTEMPTS "
                                f"({max_attempts}): k counts the attempts made so far, the first included."))
            continue
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in answers):
            checks.append(Check(where, False, f"answered {answers[0]!r}: return a number of seconds."))
            continue
        bound, low, high = backoff_bound(k, base_s, cap_s), min(answers), max(answers)
        if low < 0 or high > bound + 1e-9:
            hint = (f"slept from {low:.3f} to {high:.3f} s; every sleep must lie in [0, min(CAP_S, BASE_S * 2**k)] "
                    f"= [0, {bound:g}] s" + (" (the cap: no sleep beyond CAP_S)" if bound == cap_s else "") + ".")
            checks.append(Check(f"{where} within its bound", False, hint))
        elif high - low < 1e-9:
            checks.append(Check(f"{where} jitters", False,
                                f"always slept {low:.3f} s: with no jitter every client that failed together "
                                "retries together. Draw the sleep at random."))
        else:
            checks.append(Check(f"{where} full jitter", low < 0.2 * bound and high > 0.8 * bound,
                                f"{DRAWS} sleeps ranged over [{low:.3f}, {high:.3f}] s only; full jitter draws "
                                f"uniformly over all of [0, {bound:g}] s."))
    return CheckGrade(checks, "Your policy backs off exponentially, with full jitter, up to the cap, and gives up "
                              "after MAX_ATTEMPTS attempts.")


def check_backoff_run(run: BackoffRun, max_attempts: int, base_s: float, cap_s: float) -> CheckGrade:
    """Grade what the pipeline did with the policy under the fault: the fault was met, nothing
    was lost, no image went beyond ``max_attempts``, every sleep within its bound and the sleeps
    spread (jitter) rather than in lockstep."""
    attempts, uploads, sleeps = run.attempts, run.uploads, run.sleeps
    met = int((~attempts["outcome"].str.startswith("HTTP")).sum())
    gave_up = uploads[uploads["gave_up"]]
    ok_lines = run.metrics[run.metrics["outcome"] == "ok"] if len(run.metrics) else run.metrics
    most = int(uploads["attempts"].max())
    bounds = np.array([backoff_bound(int(k), base_s, cap_s) for k in sleeps["retry"]])
    over = sleeps[sleeps["asked_s"].to_numpy() > bounds + 1e-9]
    spread = np.ptp(sleeps["slept_s"].to_numpy() / bounds) if len(sleeps) >= 4 else math.nan
    patience = sum(backoff_bound(k, base_s, cap_s) for k in range(1, max_attempts)) / 2
    checks = [
        Check("the fault was met", met > 0,
              "no attempt met a reset connection, so this run tested nothing: run the cell again."),
        Check("nothing lost", gave_up.empty and len(ok_lines) == len(uploads),
              f"{len(gave_up)} of {len(uploads)} images gave up and {len(uploads) - len(gave_up) - len(ok_lines)} "
              f"uploaded ones did not finish, while the fault lasted {run.fault_s:.1f} s: the sleeps before giving "
              f"up must outlast a short fault (your policy's expected patience is about {patience:.1f} s)."),
        Check("attempts within the cap", most <= max_attempts,
              f"an image made {most} attempts; MAX_ATTEMPTS is {max_attempts}, the first one included."),
        Check("every sleep within its bound", over.empty,
              f"{len(over)} sleeps were longer than min(CAP_S, BASE_S * 2**k), e.g. retry {over['retry'].iloc[0]} "
              f"asked {over['asked_s'].iloc[0]:.3f} s." if len(over) else ""),
        Check("the sleeps show the jitter", bool(spread > 0.3),
              f"{len(sleeps)} retries' sleeps, each divided by its bound, spread over only {spread:.2f} of it "
              "(at least 4 retries and a spread above 0.3 expected): retries left in lockstep."),
    ]
    return CheckGrade(checks, f"Under a {run.fault_s:.1f} s fault every image went through, with at most {most} "
                              f"attempts and its retries spread by the jitter.")


# ------------------------------------------------------------------ size policy (notebook 02)


def reference_size(width: int, height: int) -> tuple[int, int]:
    """320 px wide, the height by the aspect ratio (rounded, at least 1 px); an image no wider
    than 320 px keeps its size."""
    if width <= WIDTH_PX:
        return width, height
    return WIDTH_PX, max(1, round(height * WIDTH_PX / width))


SIZE_CASES: list[tuple[tuple[int, int], str]] = [
    ((1920, 1080), "A landscape image is 320 px wide and keeps its aspect ratio."),
    ((1080, 1920), "A portrait image is 320 px wide too (the width is fixed, not the longest edge)."),
    ((800, 600), "Scale the height by 320 / width."),
    ((333, 1000), "Round the height to the nearest pixel (round), do not cut it (int, //)."),
    ((5000, 2), "A very wide image still needs a height of at least 1 px."),
    ((300, 200), "Never upscale: an image no wider than 320 px keeps its size."),
    ((320, 240), "An image exactly 320 px wide keeps its size."),
]


def _size_ok(answer, expected: tuple[int, int]) -> bool:
    return (isinstance(answer, (tuple, list)) and len(answer) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in answer) and tuple(answer) == expected)


def check_size_policy(size_policy: Callable[[int, int], tuple[int, int]]) -> CheckGrade:
    """The policy against labkit's reference on made-up sizes, each with a hint."""
    checks = []
    for (w, h), hint in SIZE_CASES:
        expected = reference_size(w, h)
        try:
            answer = size_policy(w, h)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, its message the feedback
            answer = f"{type(e).__name__}: {e}"
        floats = isinstance(answer, (tuple, list)) and any(isinstance(v, float) for v in answer)
        ints = " Return whole numbers of pixels, e.g. `(320, 180)`." if floats else ""
        checks.append(Check(f"size_policy({w}, {h})", _size_ok(answer, expected),
                            f"you answered `{answer!r}`, the policy gives `{expected}`. {hint}{ints}"))
    return CheckGrade(checks, "Your policy is the 320 px feed's.")


def check_resize_run(run: ResizeRun) -> CheckGrade:
    """Grade what the pipeline did with the policy: every image resized, each output exactly the
    size the policy asked for (and the reference's), the lab's own action back afterwards, and
    the cost measured on both."""
    yours, theirs = run.rows[run.rows["policy"] == "yours"], run.rows[run.rows["policy"] == "the lab's"]
    out = list(zip(yours["width_out"].astype("Int64"), yours["height_out"].astype("Int64")))
    asked = [tuple(a) if a else None for a in yours["asked"]]
    reference = [reference_size(int(w), int(h)) for w, h in zip(yours["width_in"], yours["height_in"])]
    fits = all(max(w, h) <= 640 for w, h in zip(theirs["width_out"], theirs["height_out"]))
    checks = [
        Check("every image resized by your action", bool(len(yours)) and (yours["outcome"] == "ok").all(),
              f"outcomes {sorted(set(yours['outcome']))}: `labkit logs faas` shows the action's error."),
        Check("outputs follow your policy", out == asked,
              f"outputs {out}, your policy asked {asked}: the action did not apply it."),
        Check("outputs follow the 320 px policy", out == reference, f"outputs {out}, the policy gives {reference}."),
        Check("the lab's action is back", run.restored and (theirs["outcome"] == "ok").all() and fits,
              "the lab's own action was not restored: run `labkit.pipeline.deploy.stand_up(lab)`."),
        Check("cost measured", run.rows["duration_ms"].notna().all() and (run.rows["duration_ms"] > 0).all(),
              "some images have no activation duration."),
    ]
    return CheckGrade(checks, "The pipeline ran your policy: every output is the size it asked for.")
