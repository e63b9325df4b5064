"""The flow's two alert policies on the real stack, read back through Mailpit's HTTP API.

- the per-image SLA e-mail (stage 5, ``record.js``): one mail per image over the threshold;
- the burn-rate alert (group 6, ``burnrate.js``): the workbook's multiwindow, multi-burn-rate
  rules on the error budget, scaled down by ``BURN_WINDOW_SCALE`` (60), one mail per episode.

Images are made slow the real way: a latency fault on the Node-RED -> FaaS hop, longer than the
10 s SLA threshold, delays every invoke that crosses it. Every wait polls; none sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import pandas as pd
import pytest

from labkit.analysis.budget import alert_comparison
from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import deploy as pipeline
from labkit.pipeline import upload
from labkit.pipeline.images import generate_pool
from labkit.stack.lab import Lab
from labkit.stack.services.mail import Mailbox
from tests.support import poll

pytestmark = pytest.mark.stack

HOP = "nodered-faas"  # each invoke crosses it once
SLOW_MS = 10_500  # over the default SLA threshold of 10 s: every image invoked under it breaks the SLA
BURN = "[burn-rate] "


@pytest.fixture(scope="module")
def alerting(lab: Lab) -> Iterator[Lab]:
    """The pipeline at its default settings, with the burn-rate windows empty: a full deploy
    restarts every node, and the burn-rate node's On Start empties its windows."""
    pipeline.stand_up(lab)
    with lab.nodered() as admin:
        flows, rev = admin.flows_with_rev()
        admin.deploy(flows, rev=rev)
    pipeline.wait_for_consumer(lab)
    yield lab


@pytest.fixture()
def run_id() -> str:
    return f"a{uuid.uuid4().hex[:8]}/"


def push_ok(lab: Lab, n: int, seed: int, prefix: str) -> pd.DataFrame:
    sent = upload.push(lab, generate_pool(n, seed=seed), concurrency=4, progress=False, prefix=prefix)
    assert (sent["status"] == 200).all(), sent[sent["status"] != 200].to_dict("records")
    return sent


def new_mails(mailbox: Mailbox, seen: set[str]) -> list[dict]:
    """The mails that arrived since ``seen`` was taken, oldest first."""
    return [m for m in reversed(mailbox.messages()) if m["ID"] not in seen]


def burn_mails(mailbox: Mailbox, seen: set[str]) -> list[dict]:
    return [m for m in new_mails(mailbox, seen) if m["Subject"].startswith(BURN)]


def sla_mails(mailbox: Mailbox, seen: set[str], keys) -> list[dict]:
    return [m for m in new_mails(mailbox, seen) if any(m["Subject"].startswith(f"SLA alert: {k} ") for k in keys)]


def epoch_ms(created: str) -> float:
    return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() * 1000


def test_one_slow_image_mails_its_own_alert_and_pages_nobody(alerting: Lab, run_id: str) -> None:
    mailbox = alerting.mailbox()
    seen = {m["ID"] for m in mailbox.messages()}
    warm = push_ok(alerting, 5, 41, run_id)
    assert (upload.wait_for(alerting, warm["key"], timeout_s=60)["duration_ms"] < 10_000).all()

    with FaultInjector(alerting) as faults:
        fault = faults.inject(Fault("latency", HOP, params={"latency_ms": SLOW_MS}))
        try:
            slow = push_ok(alerting, 1, 42, run_id)
            row = upload.wait_for(alerting, slow["key"], timeout_s=90).iloc[0]
        finally:
            faults.clear(fault)
    assert row["outcome"] == "ok" and row["duration_ms"] >= 10_000, row.to_dict()
    poll("the slow image's SLA e-mail", lambda: sla_mails(mailbox, seen, slow["key"]), timeout_s=20)

    # A barrier: good images recorded after the slow one's alert went out; the burn-rate node
    # checked its windows with each of them.
    barrier = push_ok(alerting, 3, 43, run_id)
    upload.wait_for(alerting, barrier["key"], timeout_s=60)
    assert len(sla_mails(mailbox, seen, slow["key"])) == 1
    assert sla_mails(mailbox, seen, [*warm["key"], *barrier["key"]]) == []
    assert burn_mails(mailbox, seen) == []


def test_a_fast_burn_pages_once_while_every_slow_image_mails(alerting: Lab, run_id: str) -> None:
    mailbox = alerting.mailbox()
    seen = {m["ID"] for m in mailbox.messages()}
    warm = push_ok(alerting, 5, 51, run_id)
    upload.wait_for(alerting, warm["key"], timeout_s=60)

    # The schedule: 30 s of latency over the SLA on every invoke; 10 images go in under it.
    schedule = FaultInjector(alerting).run_schedule(
        [Fault("latency", HOP, at_s=0, duration_s=30, params={"latency_ms": SLOW_MS})])
    try:
        t_fault = poll("the fault in force", lambda: schedule.windows()["start_ms"].tolist(), timeout_s=10)[0]
        burst = push_ok(alerting, 10, 52, run_id)
        page = poll("the burn-rate page", lambda: burn_mails(mailbox, seen), timeout_s=90)
        rows = upload.wait_for(alerting, burst["key"], timeout_s=120)
    finally:
        schedule.wait()
    after = push_ok(alerting, 3, 53, run_id)  # good again once the fault is gone
    upload.wait_for(alerting, after["key"], timeout_s=60)

    slow = rows[rows["duration_ms"] >= 10_000]
    assert len(slow) >= 5, rows[["key", "outcome", "duration_ms"]].to_dict("records")
    per_image = poll("an SLA e-mail per slow image", lambda: (m := sla_mails(mailbox, seen, slow["key"]))
                     and len(m) == len(slow) and m, timeout_s=30)
    burns = burn_mails(mailbox, seen)
    assert [m["Subject"] for m in burns] == [page[0]["Subject"]], [m["Subject"] for m in burns]
    assert page[0]["Subject"].startswith("[burn-rate] page: error budget burning ")
    message = mailbox.message(page[0]["ID"])
    assert [to["Address"] for to in message["To"]] == ["instructor@lab.local"]
    assert "scaled down by 60" in message["Text"] and "FIRING" in message["Text"]

    detected_s = (epoch_ms(page[0]["Created"]) - t_fault) / 1000
    first_bad_s = (slow["t_done"].min() - t_fault) / 1000
    assert first_bad_s <= detected_s < first_bad_s + 30
    table = alert_comparison(new_mails(mailbox, seen), schedule.windows()).set_index("policy")
    print(f"\nfast burn: {len(slow)} of {len(rows)} images over the SLA, the first done {first_bad_s:.1f} s after "
          f"the fault began\n{table.to_string()}")
    assert table.loc["burn-rate", ["alerts", "detected", "redundant", "false"]].tolist() == [1, 1, 0, 0]
    assert table.loc["per-image", "alerts"] == len(per_image) and table.loc["per-image", "redundant"] == len(slow) - 1


def redeploy_with(lab: Lab, **env: float) -> None:
    """The deployed pipeline again, with these tab env properties changed (the others kept)."""
    with lab.nodered() as admin:
        tab = next(n for n in admin.flows() if n["id"] == pipeline.TAB_ID)
    current = {e["name"]: float(e["value"]) if e["type"] == "num" else e["value"] for e in tab["env"]}
    pipeline.deploy_flow(lab, {**current, **env})
    pipeline.wait_for_consumer(lab)


def test_an_episode_ends_with_one_resolved_mail_once_the_burn_stops(alerting: Lab, run_id: str) -> None:
    # Windows 12 times shorter than the default: the ticket's short window is 30 s, not 6 min.
    redeploy_with(alerting, BURN_WINDOW_SCALE=720)
    try:
        mailbox = alerting.mailbox()
        seen = {m["ID"] for m in mailbox.messages()}
        schedule = FaultInjector(alerting).run_schedule(
            [Fault("latency", HOP, at_s=0, duration_s=15, params={"latency_ms": SLOW_MS})])
        try:
            poll("the fault in force", lambda: len(schedule.windows()), timeout_s=10)
            burst = push_ok(alerting, 5, 61, run_id)
            poll("the burn-rate page", lambda: burn_mails(mailbox, seen), timeout_s=90)
            rows = upload.wait_for(alerting, burst["key"], timeout_s=120)
        finally:
            schedule.wait()
        # No image comes now: the node's tick every second ends the episode once the windows are clean.
        burns = poll("the resolved mail", lambda: (m := burn_mails(mailbox, seen)) and len(m) >= 2 and m,
                     timeout_s=120)
    finally:
        pipeline.stand_up(alerting)
    assert (rows["duration_ms"] >= 10_000).sum() >= 3
    assert [m["Subject"].split(":")[0] for m in burns] == ["[burn-rate] page", "[burn-rate] resolved"]
    assert burns[1]["Subject"].startswith("[burn-rate] resolved: page after ")
    last_bad_s = (epoch_ms(burns[1]["Created"]) - rows["t_done"].max()) / 1000
    print(f"\nresolved {last_bad_s:.1f} s after the last slow image (the ticket's short window: 30 s)")
    assert 29 <= last_bad_s < 60
