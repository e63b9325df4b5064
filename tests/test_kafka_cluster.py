"""The replicated Kafka topology (LABKIT_KAFKA_BROKERS=3): three brokers, each a service of its own,
topics on all three at min.insync.replicas 2, and a pipeline that rides out the crash of any one.

The stack test stands up a lab of its own with three brokers (at this session's ``crash`` port
offset), drives 10 images/s through the pipeline, and ``kill -9``s each broker in
turn, then the active KRaft controller. Each stays down until an image uploaded after its kill has come out, so the test
shows that the pipeline completes images *while* a broker is dead, not only after its restart;
the next kill waits until every replica is in sync again (one failure at a time). Nothing may be
lost (settle, reconciliation and the audit). The longest gap between two completions around each
kill is printed and kept as a user property of the test (``longest_gap_s``): it is reported
against the 5 s target (docs/reliability.md), and bounded here only generously, because this
machine's 2 cores are shared. What makes it short is asserted instead: the controllers are
processes of their own, so no broker's kill changes the active controller (no election before
the fencing), while the controller's own kill does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.errors import LabConfigError
from labkit.experiments.availability import longest_gap_s
from labkit.experiments.faults import Fault, FaultInjector
from labkit.experiments.load import now_ms, start_open_loop
from labkit.experiments.settle import settle
from labkit.experiments.spec import load_spec
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.audit import audit
from labkit.pipeline.kafka import active_controller, fully_replicated, replicas
from labkit.pipeline.metrics import lab_metrics
from labkit.stack.backends.native import NativeBackend
from labkit.stack.context import LabContext
from labkit.stack.lab import Lab
from labkit.stack.services.kafka import (
    BROKER_REPLICAS,
    CONTROLLER_ID_BASE,
    CONTROLLERS,
    REPLICAS,
    TOPICS,
    TOPOLOGY_FILE,
    controller_name,
)
from tests.conftest import lab_processes

BROKERS = ("kafka", *BROKER_REPLICAS)
RATE_PER_S = 10.0
# The longest a broker stays dead waiting for an image to come out, and the longest the cluster
# may take to be in sync again after its restart: generous, for a loaded machine.
THROUGH_TIMEOUT_S = 90.0
IN_SYNC_TIMEOUT_S = 120.0
# What the test reports against (docs/reliability.md); asserted only as a generous bound.
GAP_TARGET_S = 5.0
ACTIVE_CONTROLLER = "the active controller"
GAP_BOUND_S = 60.0


# -- without services ---------------------------------------------------------------
def test_the_topology_setting_takes_one_or_three_brokers(tmp_path) -> None:
    for wrong in (0, 2, 5):
        with pytest.raises(LabConfigError, match="LABKIT_KAFKA_BROKERS=1 .* or LABKIT_KAFKA_BROKERS=3") as e:
            LabContext.from_env(data_dir=tmp_path, kafka_brokers=wrong)
        assert "\n" not in str(e.value)
    with pytest.raises(LabConfigError, match="native backend only"):
        LabContext.from_env(data_dir=tmp_path, backend="compose", kafka_brokers=3)
    one = NativeBackend(LabContext.from_env(data_dir=tmp_path, port_offset=2000))
    three = NativeBackend(LabContext.from_env(data_dir=tmp_path, port_offset=2000, kafka_brokers=3))
    assert [n for n in one.services if n.startswith("kafka")] == ["kafka"]
    # the controllers start first, and are stopped last
    assert [n for n in three.services if n.startswith("kafka")] == [*CONTROLLERS, *BROKERS]
    for node in ("kafka-2", "kafka-controller"):
        with pytest.raises(LabConfigError, match="LABKIT_KAFKA_BROKERS=3"):
            one.service(node)
    # every client bootstraps from every broker; each broker has its own ports and store hop
    assert three.endpoints()["kafka"] == ",".join(f"127.0.0.1:{three.service(b).ports[b]}" for b in BROKERS)
    assert three.service("nodered").environment()["LABKIT_KAFKA_BOOTSTRAP"] == three.endpoints()["kafka"]
    assert len({p for n in (*BROKERS, *CONTROLLERS) for p in three.service(n).ports.values()}) == 9
    # a broker of the cluster is not a controller, and a controller is not a broker
    broker = three.service("kafka-2").render_properties()
    assert "process.roles=broker\n" in broker and "CONTROLLER://" not in broker.split("listeners=")[1].split()[0]
    assert "controller.quorum.voters=101@" in broker and "\nbroker.session.timeout.ms" not in broker
    controller = three.service("kafka-2-controller").render_properties()
    assert "process.roles=controller\n" in controller and "node.id=102\n" in controller
    assert "broker.session.timeout.ms=2000" in controller
    # the one-node topology is broker and controller in one process, voter 1
    single = one.service("kafka").render_properties()
    assert "process.roles=broker,controller\n" in single and "controller.quorum.voters=1@" in single
    assert "broker.session.timeout.ms=2000" in single


def test_a_lab_made_with_one_topology_refuses_the_other(tmp_path) -> None:
    made = tmp_path / "kafka" / TOPOLOGY_FILE
    made.parent.mkdir(parents=True)
    made.write_text(json.dumps({"brokers": 3, "cluster_id": "x", "controllers": "dedicated"}))
    one = NativeBackend(LabContext.from_env(data_dir=tmp_path, port_offset=2000))
    with pytest.raises(LabConfigError, match=r"made with 3 broker.*`labkit down --wipe`") as e:
        one.service("kafka").prepare()
    assert "\n" not in str(e.value)
    # a lab made before the topology was recorded has one broker
    made.unlink()
    (tmp_path / "kafka" / "logs").mkdir()
    (tmp_path / "kafka" / "logs" / "meta.properties").write_text("node.id=1\n")
    three = NativeBackend(LabContext.from_env(data_dir=tmp_path, port_offset=2000, kafka_brokers=3))
    with pytest.raises(LabConfigError, match="made with 1 broker"):
        three.service("kafka-2").prepare()
    # `labkit down --wipe` on either topology deletes every node's data
    assert {p.name for p in one.service("kafka").data_paths()} == {"kafka", *REPLICAS}
    # a replicated lab made when the brokers were their own controllers must be made again
    made.write_text(json.dumps({"brokers": 3, "cluster_id": "x"}))
    with pytest.raises(LabConfigError, match="older labkit.*`labkit down --wipe`") as e:
        three.service("kafka-controller").prepare()
    assert "\n" not in str(e.value)


# -- on a lab of three brokers --------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ports) -> Iterator[Lab]:
    data_dir = tmp_path_factory.mktemp("replicated")
    # The crash-safety tests' offset: their labs live within one test each, and this one within
    # this module, so the two never run at once in a session.
    lab = Lab.from_env(data_dir=data_dir, port_offset=ports.offset("crash"), backend="native",
                       kafka_brokers=3)
    try:
        lab.up()
        pipeline.stand_up(lab)
        yield lab
    finally:
        lab.down()
    assert lab_processes(data_dir) == [], "labkit down left processes behind"


@pytest.mark.stack
def test_topics_live_on_three_brokers_with_two_in_sync_for_a_write(cluster: Lab) -> None:
    status = cluster.status()
    assert set(status.index[status["healthy"]]) >= set(BROKERS), status
    table = replicas(cluster.kafka_bootstrap, TOPICS)
    assert set(table["topic"]) == set(TOPICS)
    assert all(sorted(r) == [1, 2, 3] for r in table["replicas"]), table
    assert (table["leader"] != 1).all(), "broker 1 (the store's bootstrap) leads only when both others are out"
    admin_configs = _topic_configs(cluster, TOPICS)
    assert all(c["min.insync.replicas"] == "2" for c in admin_configs.values()), admin_configs


def _topic_configs(lab: Lab, topics) -> dict[str, dict[str, str]]:
    """Topic -> its configs set on the topic itself (name -> value)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=lab.kafka_bootstrap, client_id="test-configs")
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        admin.close()
    return {t: {name: c["value"] for name, c in configs.items()} for t, configs in found["topic"].items()}


def _done_after(lab: Lab, sent: pd.DataFrame, since_ms: float) -> float | None:
    """When the first image uploaded at ``since_ms`` or later came out resized; None: none yet."""
    after = set(sent.loc[(sent["t_upload_start"] >= since_ms) & (sent["status_code"] == 200), "key"])
    lines = lab_metrics(lab)
    if lines.empty:
        return None
    done = lines.loc[lines["key"].isin(after) & (lines["outcome"] == "ok"), "t_done"]
    return float(done.min()) if len(done) else None


def _wait(what: str, probe, timeout_s: float):
    outcome = Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.5), retry=retry_if_result(lambda v: not v),
                       retry_error_callback=lambda _: None)(probe)
    assert outcome, f"{what}: not within {timeout_s:.0f} s"
    return outcome


@pytest.mark.stack
def test_kill_9_of_any_one_broker_under_load_loses_nothing_and_images_keep_coming(
        cluster: Lab, record_property) -> None:
    prefix = f"cluster/{uuid.uuid4().hex[:8]}/"
    spec = load_spec({"name": "kafka-cluster-kill", "fault_label": "kill -9 each broker in turn",
                      "load": {"kind": "open", "rate_per_s": RATE_PER_S, "images": 4000, "max_duration_s": 900,
                               "sizes": [[640, 480]]},
                      "retry": "exponential", "reconcile": True, "seed": 16, "drain_timeout_s": 240})
    injector = FaultInjector(cluster)
    load = start_open_loop(cluster, RATE_PER_S, 4000, 900, seed=16, prefix=prefix, sizes=[(640, 480)],
                           progress=False)
    kills = []
    try:
        _wait("the first image through", lambda: _done_after(cluster, load.results(), 0), THROUGH_TIMEOUT_S)
        active_controller_before = active_controller(cluster.kafka_bootstrap)
        # each broker in turn, then the active controller: its death elects another one and
        # moves no partition, so images keep coming as if nothing happened
        for broker in [*BROKERS, ACTIVE_CONTROLLER]:
            if broker == ACTIVE_CONTROLLER:
                broker = controller_name(active_controller(cluster.kafka_bootstrap) - CONTROLLER_ID_BASE)
            fault = Fault("kill", broker)
            killed_ms = now_ms()
            injector.inject(fault)
            try:
                # the broker stays dead until an image sent after the kill has come out
                through = _wait(f"an image through with {broker} dead",
                                lambda k=killed_ms: _done_after(cluster, load.results(), k), THROUGH_TIMEOUT_S)
            finally:
                injector.clear(fault)  # start it again and wait until it is healthy
            restarted_ms = now_ms()
            _wait("every replica in sync again", lambda: fully_replicated(cluster.kafka_bootstrap, TOPICS),
                  IN_SYNC_TIMEOUT_S)
            kills.append({"broker": broker, "killed_ms": killed_ms, "first_through_s": (through - killed_ms) / 1000,
                          "restarted_ms": restarted_ms, "in_sync_ms": now_ms(),
                          "controller": active_controller(cluster.kafka_bootstrap)})
            time.sleep(3)  # a little steady load between kills: the schedule's pause, not a wait for an event
    finally:
        load.stop()
        table = load.wait()
        injector.clear_all()

    results, _ = settle(cluster, spec, table, prefix, fault="kill -9 each broker in turn")
    report = audit(cluster, prefix=prefix, grace_s=0)
    fates = results["status"].value_counts().to_dict()
    done = lab_metrics(cluster)
    done = done.loc[done["key"].astype(str).str.startswith(prefix) & (done["outcome"] == "ok"), "t_done"].tolist()
    for kill in kills:
        kill["longest_gap_s"] = longest_gap_s(done, kill["killed_ms"], kill["in_sync_ms"])
    summary = pd.DataFrame(kills)[["broker", "first_through_s", "longest_gap_s", "controller"]]
    print(f"\n{len(table)} uploads, fates {fates}, audit {dict(report.counts)}\n{summary.to_string(index=False)}")
    record_property("longest_gap_s", summary.set_index("broker")["longest_gap_s"].to_dict())
    record_property("fates", fates)

    assert results["status"].eq("resized").all(), fates
    assert not report.counts.get("lost") and not report.counts.get("pending"), dict(report.counts)
    assert len(kills) == len(BROKERS) + 1 and kills[-1]["broker"] in CONTROLLERS
    # no broker's death took the active controller with it (no election on a broker kill); the
    # controller's own death elected another
    first = active_controller_before
    assert summary["controller"].iloc[:-1].eq(first).all(), summary
    assert summary["controller"].iloc[-1] != first, summary
    assert (summary["longest_gap_s"] < GAP_BOUND_S).all(), summary
