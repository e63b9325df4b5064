"""The flow's two alert policies on the real stack: what each mails for one slow image, and for a
fast burn of the error budget, read back from Mailpit.

Two scenarios, each one run of the same skeleton (reset the burn-rate windows, warm up, a latency
fault on the Node-RED -> FaaS hop while images go in, good images after it, collect the mails):

- ``single slow image``: one image under the fault, good ones around it. The SLO allows it; the
  per-image policy mails once, the burn-rate policy (``BURN_MIN_BAD``) stays silent;
- ``fast burn``: every image of a burst under the fault, so the error budget burns at many times
  the page threshold. The per-image policy mails once per image; the burn-rate policy pages once.

The latency (10.5 s) is over the SLA threshold (10 s), so every image invoked under it is bad.
Each run starts with a full deploy, which empties the burn-rate node's windows: a run begins with
its whole budget, and an episode the last run opened does not swallow this run's page.

Example:
    >>> study = study_alerting(lab, repetitions=2, burst=6)       # doctest: +SKIP
    >>> study.comparison()[["scenario", "repetition", "policy", "alerts", "detect_s"]]  # doctest: +SKIP
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.analysis.budget import DEFAULTS, POLICY_SUBJECTS, alert_comparison, burn_rates, recorded_ms
from labkit.errors import ServiceError
from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.images import generate_pool
from labkit.pipeline.upload import push, wait_for
from labkit.stack.lab import Lab

HOP = "nodered-faas"  # every invoke crosses it once
LATENCY_MS = 10_500  # over the SLA threshold (10 s): an image invoked under it is bad
SCENARIOS = ("single slow image", "fast burn")
# The fault lasts until its images are in; this only bounds it if a run dies half-way.
FAULT_BOUND_S = 300
IMAGE_TIMEOUT_S = 150  # an image under the fault: 2 x 10.5 s on a new TLS connection, plus a queue
MAIL_TIMEOUT_S = 30


@dataclass(frozen=True)
class AlertRun:
    """One run of a scenario.

    Attributes:
        scenario: One of :data:`SCENARIOS`.
        repetition: 0, 1, ... within the scenario.
        images: The run's metrics rows, one per image, with ``phase`` (warm-up, faulted, after).
        mails: The Mailpit summaries of the mails the run brought, oldest first.
        windows: The fault's window (``start_ms``, ``end_ms``, epoch ms).
    """

    scenario: str
    repetition: int
    images: pd.DataFrame
    mails: list[dict]
    windows: pd.DataFrame

    def comparison(self) -> pd.DataFrame:
        """:func:`~labkit.analysis.budget.alert_comparison` of this run, with its scenario and
        repetition, and the images the fault made bad."""
        faulted = self.images[self.images["phase"] == "faulted"]
        return alert_comparison(self.mails, self.windows).assign(
            scenario=self.scenario, repetition=self.repetition, images=len(faulted),
            bad=int((faulted["duration_ms"] >= DEFAULTS["sla_ms"]).sum()))


@dataclass(frozen=True)
class AlertStudy:
    """Every run of :func:`study_alerting`, and the tables the notebook plots."""

    runs: list[AlertRun]
    latency_ms: float

    def comparison(self) -> pd.DataFrame:
        """One row per run and policy: ``scenario, repetition, policy, alerts, detected, faults,
        detect_s, redundant, false, images, bad``."""
        frame = pd.concat([r.comparison() for r in self.runs], ignore_index=True)
        first = ["scenario", "repetition", "policy"]
        return frame[first + [c for c in frame if c not in first]]

    def images(self) -> pd.DataFrame:
        """Every run's metrics rows, with ``scenario`` and ``repetition``."""
        return pd.concat([r.images.assign(scenario=r.scenario, repetition=r.repetition) for r in self.runs],
                         ignore_index=True)

    def mails(self) -> pd.DataFrame:
        """One row per mail: ``scenario, repetition, policy`` (per-image, burn-rate, or None for a
        resolved notice), ``subject, t_ms`` (epoch ms) and ``after_fault_s``."""
        rows = []
        for run in self.runs:
            start = float(run.windows["start_ms"].min())
            for mail in run.mails:
                t_ms = epoch_ms(mail["Created"])
                rows.append({"scenario": run.scenario, "repetition": run.repetition, "policy": policy_of(mail),
                             "subject": mail["Subject"], "t_ms": t_ms, "after_fault_s": (t_ms - start) / 1000})
        return pd.DataFrame(rows, columns=["scenario", "repetition", "policy", "subject", "t_ms", "after_fault_s"])

    def of(self, scenario: str) -> list[AlertRun]:
        return [r for r in self.runs if r.scenario == scenario]


def study_alerting(lab: Lab, repetitions: int = 2, burst: int = 6, latency_ms: float = LATENCY_MS,
                   seed: int = 0, stand_up: bool = True) -> AlertStudy:
    """One single slow image, then ``repetitions`` fast burns of ``burst`` images each.

    The single slow image has two good images before it and one after (the barrier that shows
    the burn-rate node checked its windows after it); a fast burn needs neither, since the
    pipeline is warm by then and its page is awaited as such. At the end the burn-rate windows
    are emptied again, so what the study filled does not reach whatever runs next.

    Args:
        stand_up: Stand the pipeline up at its default settings first (skip it when the caller
            just did).

    Raises:
        ServiceError: an image, the fault or an expected mail did not come in time.
    """
    if stand_up:
        pipeline.stand_up(lab)
    prefix = f"alerting-{uuid.uuid4().hex[:6]}/"
    try:
        runs = [run_scenario(lab, "single slow image", 0, 1, latency_ms, seed, prefix, warmup=2, after=1)]
        runs += [run_scenario(lab, "fast burn", r, burst, latency_ms, seed + 10 * (r + 1), prefix, warmup=0, after=0)
                 for r in range(repetitions)]
    finally:
        reset_burn_windows(lab)
    return AlertStudy(runs, latency_ms)


def run_scenario(lab: Lab, scenario: str, repetition: int, slow: int, latency_ms: float, seed: int,
                 prefix: str, warmup: int = 2, after: int = 1) -> AlertRun:
    """One run: ``warmup`` good images, ``slow`` images under the latency fault, ``after`` good
    images (a barrier: the burn-rate node checked its windows with each, after the slow ones), then
    the mails.

    Raises:
        ServiceError: an image did not finish, or an expected mail did not come, in time.
    """
    reset_burn_windows(lab)
    mailbox = lab.mailbox()
    seen = {m["ID"] for m in mailbox.messages()}
    base = f"{prefix}{scenario.replace(' ', '-')}-{repetition}/"
    pool = generate_pool(warmup + slow + after, seed=seed, sizes=[(640, 480)], mix={"jpeg": 1.0})
    warm = _through(lab, pool[:warmup], base + "warm/")
    faulted, windows = _under_fault(lab, pool[warmup:warmup + slow], base + "slow/", latency_ms)
    rest = _through(lab, pool[warmup + slow:], base + "after/")
    images = pd.concat([warm.assign(phase="warm-up"), faulted.assign(phase="faulted"), rest.assign(phase="after")],
                       ignore_index=True)
    mails = _await_mails(mailbox, seen, images)
    return AlertRun(scenario, repetition, images, mails, windows)


def burn_settings(lab: Lab) -> dict[str, float]:
    """The deployed flow's alert settings (the pipeline tab's env): ``SLA_THRESHOLD_MS``,
    ``BURN_SLO``, ``BURN_WINDOW_SCALE``, ``BURN_MIN_BAD``; a setting the tab lacks has its default."""
    with lab.nodered() as admin:
        tab = next(n for n in admin.flows() if n["id"] == pipeline.TAB_ID)
    env = {e["name"]: e["value"] for e in tab.get("env", [])}
    defaults = {"SLA_THRESHOLD_MS": DEFAULTS["sla_ms"], "BURN_SLO": DEFAULTS["slo"],
                "BURN_WINDOW_SCALE": DEFAULTS["scale"], "BURN_MIN_BAD": DEFAULTS["min_bad"]}
    return {name: float(env.get(name, default)) for name, default in defaults.items()}


def reset_burn_windows(lab: Lab) -> None:
    """A full deploy of the flow as it is: every node restarts, and the burn-rate node's On Start
    empties its windows (and ends any open episode without a mail)."""
    with lab.nodered() as admin:
        flows, rev = admin.flows_with_rev()
        admin.deploy(flows, rev=rev)
    pipeline.wait_for_consumer(lab)


def _through(lab: Lab, images: list, prefix: str) -> pd.DataFrame:
    if not images:
        return pd.DataFrame()
    sent = push(lab, images, concurrency=4, progress=False, prefix=prefix)
    if not (sent["status"] == 200).all():
        raise ServiceError(f"uploads refused: {sent[sent['status'] != 200][['key', 'status', 'error']].to_dict('records')}. "
                           "Hint: `labkit status`.")
    return wait_for(lab, sent["key"], timeout_s=IMAGE_TIMEOUT_S)


def _under_fault(lab: Lab, images: list, prefix: str, latency_ms: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images pushed while the hop carries ``latency_ms``; the fault ends once all are recorded."""
    injector = FaultInjector(lab)
    with injector:
        schedule = injector.run_schedule(
            [Fault("latency", HOP, at_s=0, duration_s=FAULT_BOUND_S, params={"latency_ms": round(latency_ms)})])
        try:
            _wait("the latency fault in force", lambda: len(schedule.windows()) > 0, 15)
            rows = _through(lab, images, prefix)
        finally:
            schedule.cancel()
    return rows, schedule.windows()


def _await_mails(mailbox: Any, seen: set[str], images: pd.DataFrame) -> list[dict]:
    """The run's mails, once those it must bring are in: one per-image mail per image over the
    threshold, and a burn-rate mail when a replay of the rules says one fired."""
    slow_keys = set(images.loc[images["duration_ms"] >= DEFAULTS["sla_ms"], "key"])
    page_due = bool(replay_fires(images))

    def arrived() -> list[dict] | None:
        mails = [m for m in reversed(mailbox.messages()) if m["ID"] not in seen and _ours(m, set(images["key"]))]
        per_image = [m for m in mails if policy_of(m) == "per-image"]
        burn = [m for m in mails if policy_of(m) == "burn-rate"]
        return mails if len(per_image) >= len(slow_keys) and (burn or not page_due) else None

    return _wait(f"{len(slow_keys)} per-image mails{' and a burn-rate page' if page_due else ''}", arrived,
                 MAIL_TIMEOUT_S)


def replay_fires(images: pd.DataFrame) -> list[float]:
    """The record times (epoch ms) at which a replay of the burn-rate rules over ``images`` says
    some rule fired (the flow checks its windows at each recorded image)."""
    times = recorded_ms(images).dropna().sort_values()
    return [float(t) for t in times if burn_rates(images, at_ms=float(t))["firing"].any()]


def burn_timeline(images: pd.DataFrame, step_ms: float = 250, rule: int = 0,
                  start_ms: float | None = None) -> pd.DataFrame:
    """One rule's two windows over a run, every ``step_ms`` from ``start_ms`` (default: the first
    image recorded) to the last image recorded: ``t_ms, long_burn, short_burn, long_bad, firing``
    (for a plot of the burn rate against the threshold)."""
    times = recorded_ms(images).dropna()
    first = times.min() if start_ms is None else min(start_ms, times.min())
    grid = pd.Series(range(int(first), int(times.max() + step_ms) + 1, int(step_ms)), dtype=float)
    rows = [burn_rates(images, at_ms=t).iloc[rule].to_dict() | {"t_ms": t} for t in grid]
    return pd.DataFrame(rows)[["t_ms", "long_burn", "short_burn", "long_bad", "firing"]]


def policy_of(mail: dict) -> str | None:
    """The policy a mail belongs to: ``per-image``, ``burn-rate``, or None (a resolved notice, other mail)."""
    return next((p for p, pattern in POLICY_SUBJECTS.items() if re.search(pattern, mail["Subject"])), None)


def _ours(mail: dict, keys: set[str]) -> bool:
    """Burn-rate mails have no key (one node, one episode); a per-image mail names its image."""
    if mail["Subject"].startswith("[burn-rate] "):
        return True
    match = re.match(r"SLA alert: (\S+) ", mail["Subject"])
    return bool(match) and match.group(1) in keys


def epoch_ms(created: str) -> float:
    """Mailpit's ``Created`` (ISO 8601) as epoch milliseconds, like the metrics' stamps."""
    return pd.Timestamp(created).timestamp() * 1000


def _wait(what: str, fetch: Callable[[], Any], timeout_s: float) -> Any:
    """Poll ``fetch`` until it returns something truthy; return it.

    Raises:
        ServiceError: it did not within ``timeout_s``.
    """
    try:
        return Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.2),
                        retry=retry_if_result(lambda r: not r))(fetch)
    except RetryError as e:
        raise ServiceError(f"Waited {timeout_s:.0f} s for {what}, in vain. Hint: Mailpit's UI (`labkit status` "
                           "lists it) shows what did arrive; `labkit logs nodered` shows the e-mail node's errors.") from e
