"""The event-driven image pipeline: stand it up, check it end to end, tear it down.

``stand_up`` makes the buckets, deploys the ``resize`` action and Node-RED's flow
(``stack/nodered/flows.json``) with this run's settings as the flow tab's env
properties; endpoints and secrets reach the flow only through Node-RED's process
environment (``NodeRed.environment()``), never through the flow JSON.

Example:
    >>> stand_up(lab)                    # doctest: +SKIP
    >>> verify(lab)["duration_ms"]       # doctest: +SKIP  (labkit.pipeline.verify)
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from kafka import KafkaProducer
from minio.error import S3Error

from labkit.errors import LabConfigError, ServiceError
from labkit.pipeline.action_zip import ACTION_SOURCE, build_action_zip
from labkit.pipeline.kafka import committed_past
from labkit.pipeline.retry import RetryHops, RetryPolicy, bind_hops
from labkit.stack.clients.openwhisk import FaasError, OpenWhiskClient
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until
from labkit.stack.services.storage import (
    READ_OBJECTS,
    TOPIC,
    WRITE_OBJECTS,
    bucket_policy,
    ensure_action_account,
)
from labkit.stack.versions import STACK_DIR

__all__ = ["ActionDeployment", "RetryHops", "RetryPolicy", "action_deployment", "deploy_action", "stand_up",
           "tear_down"]

ACTION = "resize"
ACTION_FILE = ACTION_SOURCE
ACTION_KIND, ACTION_MAIN = "python:3.11", "main"  # the runtime kind and entry function
# How the action's code is sent: its source file, or the zip a real OpenWhisk needs (labkit.pipeline.action_zip).
FORMS = ("source", "zip")
FLOWS_FILE = STACK_DIR / "nodered" / "flows.json"
SOURCE_BUCKET, OUTPUT_BUCKET, FAILED_BUCKET = "dit247", "dit247c", "dit247-failed"
BUCKETS = (SOURCE_BUCKET, OUTPUT_BUCKET, FAILED_BUCKET)
# All the resize action's store account may do, as bucket policies: read the originals,
# write the outputs and the dead letters. Every other bucket and action is denied to it
# (see labkit.stack.services.storage for what versitygw enforces and what it cannot express).
ACTION_GRANTS: dict[str, tuple[str, ...]] = {SOURCE_BUCKET: READ_OBJECTS, OUTPUT_BUCKET: WRITE_OBJECTS,
                                             FAILED_BUCKET: WRITE_OBJECTS}
TAB_ID = "pl_tab"
CONSUMER_GROUP = "nodered-pipeline"
# Big photos need the memory; 4 workers share the machine's cores.
ACTION_LIMITS = {"memory": 512, "timeout": 60_000, "concurrency": 4}
CONSUMER_READY_TIMEOUT_S = 45.0
PROBE_WAIT_S = 2.0


@cache
def action_module() -> ModuleType:
    """The resize action, imported by path the way a runner loads it (its ``output_key`` is the
    rule for output names; its ``resize_image`` the bare work per image)."""
    name = "labkit_resize_action"
    spec = importlib.util.spec_from_file_location(name, ACTION_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the action look their module up here
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- stand up


def stand_up(lab: Lab, sla_threshold_s: float | None = None, max_inflight: int = 8,
             retry: RetryHops | RetryPolicy | str = RetryHops(), action_concurrency: int = ACTION_LIMITS["concurrency"],
             consumer_concurrency: int = 1) -> None:
    """Make the pipeline run on a started lab; idempotent (run it again to change settings).

    Creates the buckets, deploys the ``resize`` action, deploys the flow (other
    Node-RED tabs are kept) and waits until its Kafka consumer is live, so images
    uploaded right after this returns are not missed. The settings become the tab's env
    properties ``SLA_THRESHOLD_MS``, ``MAX_INFLIGHT`` and the hops' retry policies
    (``UPLOAD_RETRY_*``, ``INVOKE_RETRY_*``, see :mod:`labkit.pipeline.retry`).

    A redeploy drops the images then in flight (the consumer commits a record when it
    hands it to the flow), so wait for those first (:func:`labkit.pipeline.upload.wait_for`).

    Args:
        lab: A lab whose services are up.
        sla_threshold_s: Alert threshold; default ``lab.ctx.config.sla_threshold_s``.
        max_inflight: Events being processed at once (the consumer's back-pressure bound).
        retry: Retry policy of uploads and invokes: one for both hops (a preset name or a
            :class:`RetryPolicy`) or one per hop (:class:`RetryHops`).
        action_concurrency: Activations of the action at once (its ``concurrency`` limit: warm workers).
        consumer_concurrency: Partitions of the topic the flow's consumer handles at once (the
            tab's env ``KAFKA_PARTITIONS_CONCURRENTLY``; matters with more than one partition).

    Raises:
        LabConfigError: A bad setting.
        ServiceError: A service refused (storage, faas, nodered), or the consumer did not start.
    """
    threshold_s = lab.ctx.config.sla_threshold_s if sla_threshold_s is None else sla_threshold_s
    if threshold_s <= 0 or not 1 <= max_inflight <= 256:
        raise LabConfigError(f"need sla_threshold_s > 0 and 1 <= max_inflight <= 256, got {threshold_s}, "
                             f"{max_inflight}")
    if not 1 <= action_concurrency <= 64 or not 1 <= consumer_concurrency <= 64:
        raise LabConfigError(f"need 1 <= action_concurrency <= 64 and 1 <= consumer_concurrency <= 64, got "
                             f"{action_concurrency}, {consumer_concurrency}")
    hops = RetryHops.of(retry)
    ensure_buckets(lab)
    deploy_action(lab, concurrency=action_concurrency, prewarm=True)
    deploy_flow(lab, {"SLA_THRESHOLD_MS": round(threshold_s * 1000, 3), "MAX_INFLIGHT": max_inflight,
                      "KAFKA_PARTITIONS_CONCURRENTLY": consumer_concurrency, **hops.tab_env()})
    wait_for_consumer(lab)


def ensure_buckets(lab: Lab) -> None:
    """Create the pipeline's buckets that do not exist yet, and grant the action its share of them.

    The action's account is (re)provisioned first: a bucket policy may only name an
    existing account, and the compose backend has no start hook that would have made it.

    Raises:
        ServiceError: storage refused.
    """
    s3 = lab.s3()
    ensure_action_account(lab.endpoints["storage"], lab.ctx.secrets, verify=lab.ctx.verify)
    principal = lab.ctx.secrets.action_access_key.get_secret_value()
    try:
        for bucket in BUCKETS:
            if not s3.bucket_exists(bucket):
                s3.make_bucket(bucket)
        for bucket, actions in ACTION_GRANTS.items():
            s3.set_bucket_policy(bucket, bucket_policy(bucket, principal, actions))
    except (S3Error, OSError) as e:
        raise ServiceError(f"storage refused to create the pipeline's buckets or their policies: {e}. "
                           "Hint: `labkit status`; `labkit logs storage`.") from e


@dataclass(frozen=True)
class ActionDeployment:
    """What :func:`deploy_action` sends for the ``resize`` action, for any OpenWhisk client to send the same.

    ``file`` is the action's source (``binary`` false) or its zip (``binary`` true, sent as the
    base64 of its bytes). ``params`` are the bound parameters; they hold the store credentials,
    so they are left out of the repr.
    """

    kind: str
    main: str
    file: Path
    binary: bool
    params: dict[str, Any] = field(repr=False)
    limits: dict[str, int]
    annotations: dict[str, Any]

    @property
    def code(self) -> str:
        """``exec.code`` as OpenWhisk takes it: the source text, or the zip's bytes in base64."""
        return base64.b64encode(self.file.read_bytes()).decode("ascii") if self.binary else self.file.read_text()


def action_deployment(lab: Lab, form: str = "source", concurrency: int = ACTION_LIMITS["concurrency"],
                      prewarm: bool = False) -> ActionDeployment:
    """The ``resize`` action as :func:`deploy_action` deploys it (kind, code, bound parameters,
    limits, annotations), so that another client (``wsk``, the ``openwhisk`` npm client) can
    deploy exactly the same action. A zip is built first if the lab's cache has none.

    Raises:
        LabConfigError: An unknown ``form``, or the zip could not be built.
    """
    if form not in FORMS:
        raise LabConfigError(f"unknown action form {form!r}. Fix: use one of {', '.join(FORMS)}.")
    s = lab.ctx.secrets
    # The action reads and writes through the action-store hop (the storage-out gateway,
    # which shares the data root and sends no events for reads).
    store = lab.backend.hop_url("action-store")
    params = {"s3_endpoint": store, "s3_out_endpoint": store,
              "s3_access_key": s.action_access_key.get_secret_value(),
              "s3_secret_key": s.action_secret_key.get_secret_value(), "target_bucket": OUTPUT_BUCKET,
              "allowed_source_buckets": [SOURCE_BUCKET], "allowed_target_buckets": [OUTPUT_BUCKET]}
    file = ACTION_FILE if form == "source" else build_action_zip(lab.ctx.config.cache_dir)
    return ActionDeployment(kind=ACTION_KIND, main=ACTION_MAIN, file=file, binary=form == "zip", params=params,
                            limits={**ACTION_LIMITS, "concurrency": concurrency},
                            annotations={"prewarm": prewarm})


def deploy_action(lab: Lab, force: bool = False, concurrency: int = ACTION_LIMITS["concurrency"],
                  prewarm: bool = False, form: str = "source", package: str | None = None) -> dict[str, Any]:
    """(Re)deploy the ``resize`` action with its S3 endpoints, credentials and allowed buckets bound.

    The credentials are the action's own store account (:data:`ACTION_GRANTS`), not root.
    By default they are bound to the action itself, the plain ``resize`` that the flow, the
    notebooks and ``verify`` call. With ``package`` they are the default parameters of that
    package and the action is ``PACKAGE/resize``, as a real user deploys it; the flow does not
    call that one (see "The pipeline's own action" in ``docs/openwhisk.md``).

    ``form="zip"`` deploys the zip a real OpenWhisk runs (:func:`labkit.pipeline.action_zip.build_action_zip`,
    built once into the lab's cache) instead of the source; the flow invokes it the same way.

    An unchanged action is left alone unless ``force``. An update retires the old warm
    workers, so the next call is a cold start; unless ``prewarm``: its annotation has the
    runner start ``concurrency`` workers with the code loaded at once (and keep them), so
    no image pays a cold start. :func:`stand_up` pre-warms.

    Returns:
        The action's ``path`` (``resize`` or ``PACKAGE/resize``), name, version, limits and
        whether it is binary (never its bound parameters: they hold credentials).

    Raises:
        LabConfigError: An unknown ``form``, or the zip could not be built.
        ServiceError: faas refused.
    """
    wanted = action_deployment(lab, form, concurrency, prewarm)
    params, limits, annotations, code = wanted.params, wanted.limits, wanted.annotations, wanted.code
    path = f"{package}/{ACTION}" if package else ACTION
    try:
        with lab.faas() as faas:
            if package:  # a changed credential reaches the next call, with no redeploy of the action
                faas.put_package(package, params)
            # GET on a packaged action shows the package's parameters as its own, so both forms compare alike.
            if force or not _action_matches(faas, path, code, params, limits, annotations):
                faas.put_action(path, code, kind=wanted.kind, main=wanted.main,
                                params=None if package else params, limits=limits, annotations=annotations)
            action = faas.get_action(path)
    except (FaasError, httpx.HTTPError) as e:
        raise ServiceError(f"faas refused the {path} action: {e}. Hint: `labkit logs faas`.") from e
    return {"path": path, **{k: action[k] for k in ("name", "version", "limits")},
            "binary": bool(action.get("exec", {}).get("binary"))}


def _action_matches(faas: OpenWhiskClient, path: str, code: str, params: dict[str, Any], limits: dict[str, int],
                    annotations: dict[str, Any]) -> bool:
    """Whether the deployed action already has this code, bound parameters, limits and annotations."""
    try:
        action = faas.get_action(path)
    except FaasError as e:
        if e.status == 404:
            return False
        raise
    deployed = action.get("limits", {})
    noted = {a["key"]: a["value"] for a in action.get("annotations", [])}
    return (action.get("exec", {}).get("code") == code
            and {p["key"]: p["value"] for p in action.get("parameters", [])} == params
            and all(deployed.get(k) == v for k, v in limits.items())
            and all(noted.get(k, False) == v for k, v in annotations.items()))


def pipeline_flows(tab_env: dict[str, Any]) -> list[dict]:
    """``flows.json`` with ``tab_env`` set as the pipeline tab's env properties."""
    flows = bind_hops(json.loads(FLOWS_FILE.read_text()))
    tab = next(n for n in flows if n["id"] == TAB_ID)
    env = {e["name"]: e for e in tab.get("env", [])}
    for name, value in tab_env.items():
        kind = "str" if isinstance(value, str) else "num"
        env[name] = {"name": name, "value": str(value), "type": kind}
    tab["env"] = list(env.values())
    return flows


def deploy_flow(lab: Lab, tab_env: dict[str, Any]) -> bool:
    """Replace the pipeline's nodes in Node-RED with ``flows.json`` (other tabs stay).

    A flow that is already deployed with these settings is left alone: a redeploy restarts
    the Kafka consumer (a group rejoin of a few seconds) and drops the images in flight.

    Returns:
        Whether it deployed.
    """
    ours = pipeline_flows(tab_env)
    with lab.nodered() as admin:
        current, rev = admin.flows_with_rev()
        if _deployed(current, ours):
            return False
        admin.deploy(_without(current, ours) + ours, rev=rev)
    return True


def _deployed(current: list[dict], ours: list[dict]) -> bool:
    """Whether ``current`` holds exactly ``ours`` (credentials aside: Node-RED never returns them)."""
    def plain(node: dict) -> dict:
        return {k: v for k, v in node.items() if k != "credentials"}

    ids = {n["id"] for n in ours}
    mine = {n["id"]: plain(n) for n in current if n.get("id") in ids or n.get("z") in ids}
    return mine == {n["id"]: plain(n) for n in ours}


def _without(flows: list[dict], ours: list[dict]) -> list[dict]:
    """``flows`` minus the nodes (and the contents of tabs and subflows) that ``ours`` defines."""
    ids = {n["id"] for n in ours}
    return [n for n in flows if n.get("id") not in ids and n.get("z") not in ids]


def wait_for_consumer(lab: Lab, timeout_s: float = CONSUMER_READY_TIMEOUT_S) -> None:
    """Block until the flow's Kafka consumer has committed past a probe record.

    A new consumer group starts at the topic's end, so events produced before it has
    joined would be skipped. The probe is an ``s3:TestEvent`` that the flow ignores; a
    new probe is sent every ``PROBE_WAIT_S`` in case the group joined after the last one.

    Raises:
        ServiceError: The consumer did not get past a probe in time.
    """
    producer = KafkaProducer(bootstrap_servers=lab.kafka_bootstrap, client_id="labkit-probe")
    probe = {"sent": None, "at": 0.0}

    def consumed() -> bool:
        if probe["sent"] is None or time.monotonic() - probe["at"] > PROBE_WAIT_S:
            probe.update(sent=_probe(producer), at=time.monotonic())
        return committed_past(lab.kafka_bootstrap, CONSUMER_GROUP, probe["sent"].partition, probe["sent"].offset)

    try:
        outcome = poll_until(consumed, timeout_s, interval_s=0.2)
    finally:
        producer.close()
    if outcome != "ready":
        raise ServiceError(f"Node-RED's Kafka consumer (group {CONSUMER_GROUP}) did not consume topic {TOPIC} "
                           f"within {timeout_s:.0f} s of the deploy. Hint: `labkit logs nodered` (look for kafka "
                           "errors).")


def _probe(producer: KafkaProducer):
    probe = {"Event": "s3:TestEvent", "Service": "labkit-probe", "Time": datetime.now(UTC).isoformat()}
    return producer.send(TOPIC, json.dumps(probe).encode()).get(timeout=10)


# ---------------------------------------------------------------- tear down


def tear_down(lab: Lab) -> None:
    """Remove the pipeline's flow (tab, subflow, config nodes) and the action; buckets and data stay."""
    ours = json.loads(FLOWS_FILE.read_text())
    with lab.nodered() as admin:
        current, rev = admin.flows_with_rev()
        admin.deploy(_without(current, ours), rev=rev)
    try:
        with lab.faas() as faas:
            faas.delete_action(ACTION)
    except FaasError as e:
        if e.status != 404:
            raise ServiceError(f"faas refused to delete the {ACTION} action: {e}") from e
