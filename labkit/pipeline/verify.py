"""Send one image through the whole pipeline, and name the first hop that fails it.

Example:
    >>> verify(lab)["duration_ms"]       # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from minio.error import S3Error

from labkit.errors import ServiceError
from labkit.pipeline.deploy import ACTION, OUTPUT_BUCKET, SOURCE_BUCKET
from labkit.pipeline.images import generate_pool
from labkit.pipeline.kafka import event_seen
from labkit.pipeline.upload import upload_one, wait_for
from labkit.stack.clients.openwhisk import FaasError
from labkit.stack.lab import Lab
from labkit.stack.services.storage import TOPIC

EVENT_SCAN_RECORDS = 500  # per partition: how far back the event check looks


def verify(lab: Lab, timeout_s: float = 30.0) -> dict:
    """Send one image through the whole pipeline and return its metrics row.

    Raises:
        ServiceError: The image did not come through; the message names the first hop
            without evidence (upload -> storage, event -> kafka, consume/invoke ->
            nodered/faas, output -> storage-out, webhook -> nodered metrics).
    """
    image = generate_pool(1, seed=247, sizes=[(800, 600)], mix={"jpeg": 1.0})[0]
    key, trace_id = f"verify/{uuid.uuid4().hex[:12]}.jpg", uuid.uuid4().hex
    with httpx.Client(base_url=lab.endpoints["nodered"], timeout=timeout_s + 30) as http:
        sent = upload_one(http, key, image.data, image.content_type, trace_id)
    if sent["status"] != 200:
        hop = "nodered (its /upload endpoint)" if sent["status"] in (None, 404) else "upload -> storage"
        raise ServiceError(f"verify: the upload hop failed ({hop}): HTTP {sent['status']}: {sent['error']}. "
                           "Hint: `labkit status`; is the flow deployed (`pipeline.stand_up(lab)`)?")
    try:
        row = wait_for(lab, [key], timeout_s).iloc[0].to_dict()
    except ServiceError as e:
        raise ServiceError(f"verify: {key} did not come through within {timeout_s:.0f} s: {_diagnose(lab, key)}") from e
    if row["outcome"] != "ok":
        raise ServiceError(f"verify: the invoke hop (faas, action {ACTION}) failed for {key}: "
                           f"{row.get('code')}: {row.get('error')}")
    return row


def _diagnose(lab: Lab, key: str) -> str:
    """The first hop of ``key``'s journey that left no evidence, as a sentence."""
    checks = (_check_stored, _check_event, _check_invoked, _check_output)
    found: dict[str, Any] = {}
    for check in checks:
        problem = check(lab, key, found)
        if problem:
            return problem
    return ("the webhook hop (storage-out -> nodered -> metrics file) failed: the output "
            f"{OUTPUT_BUCKET}/{found['key_out']} exists but Node-RED wrote no metrics line. "
            "Hint: `labkit logs storage-out`; `labkit logs nodered`.")


def _check_stored(lab: Lab, key: str, found: dict) -> str | None:
    try:
        lab.s3().stat_object(SOURCE_BUCKET, key)
    except (S3Error, OSError) as e:
        return f"the upload hop (nodered -> storage) failed: {SOURCE_BUCKET}/{key} is not stored ({e})."
    return None


def _check_event(lab: Lab, key: str, found: dict) -> str | None:
    try:
        seen = event_seen(lab.kafka_bootstrap, key, last=EVENT_SCAN_RECORDS)
    except Exception as e:  # noqa: BLE001 - kafka-python raises many types when the broker is gone
        return f"the event hop (storage -> kafka) cannot be checked: Kafka is unreachable ({e}). Hint: `labkit status`."
    if not seen:
        return (f"the event hop (storage -> kafka) failed: no ObjectCreated event for {key} in topic {TOPIC}. "
                "Hint: `labkit logs storage`; `labkit logs kafka`.")
    return None


def _check_invoked(lab: Lab, key: str, found: dict) -> str | None:
    try:
        with lab.faas() as faas:
            records = faas.list_activations(name=ACTION, limit=200, docs=True)
    except (FaasError, httpx.HTTPError) as e:
        return (f"the consume/invoke hop (nodered -> faas) failed: the FaaS API is unreachable ({e}), so Node-RED "
                f"cannot invoke {ACTION}. Hint: `labkit status`; `labkit start faas`.")
    for record in records:
        result = (record.get("response") or {}).get("result") or {}
        if result.get("key") == key:
            found["key_out"] = result.get("key_out")
            if not record["response"].get("success"):
                error = result.get("error") or {}
                return f"the invoke hop (faas) failed: {ACTION} answered {error.get('code')}: {error.get('message')}."
            return None
        if (result.get("error") or {}).get("key") == key:
            error = result["error"]
            return f"the invoke hop (faas) failed: {ACTION} answered {error.get('code')}: {error.get('message')}."
    return (f"the consume/invoke hop (nodered -> faas) failed: Kafka has the event but faas has no {ACTION} "
            "activation for it. Hint: `labkit logs nodered` (consumer, invoke errors); `labkit logs faas`.")


def _check_output(lab: Lab, key: str, found: dict) -> str | None:
    try:
        lab.s3("storage-out").stat_object(OUTPUT_BUCKET, found["key_out"])
    except (S3Error, OSError) as e:
        return f"the output hop (faas -> storage-out) failed: {OUTPUT_BUCKET}/{found['key_out']} is missing ({e})."
    return None
