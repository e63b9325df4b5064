"""After ``kill -9`` of the broker and its restart, the pipeline's Kafka consumer comes back
without waiting for a refused heartbeat.

The broker is killed during no load and started again; the consumer (labkit-kafka-in) polls
it at most a second apart and says in Node-RED's log how it came back: as the same group
member, while the restarted coordinator still holds its membership. The broker is killed on an
idle pipeline, so a fetch (a 1 s long-poll) is nearly always in flight: without lastbroker.js
kafkajs then dropped its only broker, restarted the consumer, and it came back as a new member
once the old membership had expired (17 s). No heartbeat is refused, and an image uploaded once
the broker is ready again goes through end to end. Time bounds here are generous on purpose (a loaded CI machine):
the figures are measured by the fault matrix's ``kill-kafka`` case (docs/reliability.md).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import upload
from labkit.pipeline.images import generate_pool
from labkit.stack.lab import Lab
from tests.support import poll

pytestmark = pytest.mark.stack

GROUP = "nodered-pipeline"
DOWN_S = 3.0
BACK = "reached the broker again"
SAME_MEMBER = f"still a member of group {GROUP} (no rejoin)"
REFUSED = "The coordinator is not aware of this member"


def push_and_wait(lab: Lab, seed: int, prefix: str) -> None:
    sent = upload.push(lab, generate_pool(1, seed=seed), concurrency=1, progress=False, prefix=prefix)
    assert (sent["status"] == 200).all(), sent.to_dict("records")
    rows = upload.wait_for(lab, sent["key"], timeout_s=120)
    assert (rows["outcome"] == "ok").all(), rows[["key", "outcome", "error"]].to_dict("records")


def log_since(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def test_consumer_comes_back_after_a_broker_kill_without_a_refused_heartbeat(pipe: Lab) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/"
    push_and_wait(pipe, 2471, prefix + "before/")  # the consumer is in its group
    log = pipe.backend.service("nodered").log_path
    offset = log.stat().st_size

    injector = FaultInjector(pipe)
    fault = Fault("kill", "kafka")
    injector.inject(fault)
    try:
        time.sleep(DOWN_S)
    finally:
        injector.clear(fault)  # starts the broker and waits until it is healthy

    push_and_wait(pipe, 2472, prefix + "after/")
    text = poll("the consumer's log line on coming back", lambda: BACK in (t := log_since(log, offset)) and t,
                timeout_s=60)
    back = next(line for line in text.splitlines() if BACK in line)
    assert back.endswith(SAME_MEMBER), back
    assert REFUSED not in text, "the consumer rejoined only after a refused heartbeat"
