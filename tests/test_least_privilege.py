"""The resize action's store account on the real gateways: it may read ``dit247`` and write
``dit247c`` and ``dit247-failed``, and nothing else (labkit.pipeline.deploy.ACTION_GRANTS).

Every check is a real S3 request signed with the action's credentials, on both gateways
(the account lives in the IAM they share). What versitygw cannot express is listed in
labkit/services/storage.py and docs/security.md.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator

import pytest
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from labkit.errors import ServiceError
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.verify import verify
from labkit.stack.lab import Lab
from labkit.stack.services.storage import REGION, StoreAdmin

pytestmark = pytest.mark.stack

GATEWAYS = ("storage", "storage-out")
RUN = uuid.uuid4().hex[:8]
PAYLOAD = b"least-privilege probe"


def action_s3(lab: Lab, gateway: str) -> Minio:
    """A client with the action's credentials, the ones deploy_action binds."""
    s = lab.ctx.secrets
    return lab.s3(gateway, (s.action_access_key.get_secret_value(), s.action_secret_key.get_secret_value()), REGION)


def admin_as(lab: Lab, access: str, secret: str) -> StoreAdmin:
    return StoreAdmin(lab.endpoints["storage"], access, secret, verify=lab.verify)


def root_admin(lab: Lab) -> StoreAdmin:
    s = lab.ctx.secrets
    return admin_as(lab, s.s3_access_key.get_secret_value(), s.s3_secret_key.get_secret_value())


def put(client: Minio, bucket: str, key: str) -> str:
    return client.put_object(bucket, key, io.BytesIO(PAYLOAD), len(PAYLOAD)).etag


def read(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def denied(call: Callable[[], object]) -> str:
    """The S3 error code ``call`` fails with; the test fails if it succeeds."""
    with pytest.raises(S3Error) as refused:
        call()
    return refused.value.code


@pytest.fixture(scope="module")
def pipe(lab: Lab) -> Iterator[Lab]:
    """The pipeline stood up (buckets, grants, the action) plus an original and a foreign bucket."""
    pipeline.stand_up(lab)
    root = lab.s3()
    put(root, pipeline.SOURCE_BUCKET, f"lp/{RUN}/original.jpg")
    other = f"lp-other-{RUN}"
    root.make_bucket(other)
    put(root, other, "secret.txt")
    yield lab


@pytest.fixture(params=GATEWAYS)
def act(request: pytest.FixtureRequest, pipe: Lab) -> Minio:
    return action_s3(pipe, request.param)


# ------------------------------------------------------------------ the account


def test_the_action_is_deployed_with_its_own_account_not_root(pipe: Lab) -> None:
    s = pipe.ctx.secrets
    with pipe.faas() as faas:
        bound = {p["key"]: p["value"] for p in faas.get_action(pipeline.ACTION)["parameters"]}
    assert bound["s3_access_key"] == s.action_access_key.get_secret_value()
    assert bound["s3_secret_key"] == s.action_secret_key.get_secret_value()
    assert s.action_access_key.get_secret_value() != s.s3_access_key.get_secret_value()


def test_the_account_is_a_plain_user_in_the_shared_iam(pipe: Lab) -> None:
    with root_admin(pipe) as admin:
        roles = admin.roles()
    assert roles == {pipe.ctx.secrets.action_access_key.get_secret_value(): "user"}


def test_the_action_cannot_use_the_admin_api(pipe: Lab) -> None:
    s = pipe.ctx.secrets
    with admin_as(pipe, s.action_access_key.get_secret_value(), s.action_secret_key.get_secret_value()) as admin:
        with pytest.raises(ServiceError, match="XAdminAccessDenied"):
            admin.ensure_user(f"lp{RUN}", "x" * 30, "admin")
        with pytest.raises(ServiceError):
            admin.roles()


# ------------------------------------------------------------------ what it may do


def test_it_reads_the_source_bucket(act: Minio) -> None:
    key = f"lp/{RUN}/original.jpg"
    assert act.stat_object(pipeline.SOURCE_BUCKET, key).size == len(PAYLOAD)
    assert read(act, pipeline.SOURCE_BUCKET, key) == PAYLOAD


def test_a_missing_source_is_not_found_not_denied(act: Minio) -> None:
    """The action tells a vanished upload (``not_found``) from a storage failure by this code."""
    assert denied(lambda: act.stat_object(pipeline.SOURCE_BUCKET, f"lp/{RUN}/never-uploaded.jpg")) == "NoSuchKey"


@pytest.mark.parametrize("bucket", [pipeline.OUTPUT_BUCKET, pipeline.FAILED_BUCKET])
def test_it_writes_the_output_and_dead_letter_buckets(act: Minio, pipe: Lab, bucket: str) -> None:
    key = f"lp/{RUN}/{uuid.uuid4().hex[:6]}.jpg"
    assert put(act, bucket, key)
    assert read(pipe.s3(), bucket, key) == PAYLOAD


# ------------------------------------------------------------------ what it may not


def test_it_cannot_write_or_delete_or_list_the_source_bucket(act: Minio) -> None:
    original = f"lp/{RUN}/original.jpg"
    assert denied(lambda: put(act, pipeline.SOURCE_BUCKET, f"lp/{RUN}/planted.jpg")) == "AccessDenied"
    assert denied(lambda: act.remove_object(pipeline.SOURCE_BUCKET, original)) == "AccessDenied"
    assert denied(lambda: list(act.list_objects(pipeline.SOURCE_BUCKET))) == "AccessDenied"
    assert denied(lambda: act.copy_object(pipeline.SOURCE_BUCKET, f"lp/{RUN}/copy.jpg",
                                          CopySource(pipeline.SOURCE_BUCKET, original))) == "AccessDenied"


@pytest.mark.parametrize("bucket", [pipeline.OUTPUT_BUCKET, pipeline.FAILED_BUCKET])
def test_it_cannot_read_list_or_delete_what_it_writes(act: Minio, bucket: str) -> None:
    key = f"lp/{RUN}/{uuid.uuid4().hex[:6]}.jpg"
    put(act, bucket, key)
    assert denied(lambda: read(act, bucket, key)) == "AccessDenied"
    assert denied(lambda: act.remove_object(bucket, key)) == "AccessDenied"
    assert denied(lambda: list(act.list_objects(bucket))) == "AccessDenied"


def test_it_cannot_touch_another_bucket(act: Minio) -> None:
    other = f"lp-other-{RUN}"
    assert denied(lambda: read(act, other, "secret.txt")) == "AccessDenied"
    assert denied(lambda: put(act, other, "planted.txt")) == "AccessDenied"
    assert denied(lambda: act.remove_object(other, "secret.txt")) == "AccessDenied"


def test_it_cannot_create_delete_or_see_buckets(act: Minio) -> None:
    assert denied(lambda: act.make_bucket(f"lp-new-{RUN}")) == "AccessDenied"
    assert denied(lambda: act.remove_bucket(pipeline.FAILED_BUCKET)) == "AccessDenied"
    assert act.list_buckets() == []  # a user lists only the buckets it owns


def test_it_cannot_change_its_grants(act: Minio) -> None:
    bucket = pipeline.SOURCE_BUCKET
    assert denied(lambda: act.get_bucket_policy(bucket)) == "AccessDenied"
    assert denied(lambda: act.set_bucket_policy(bucket, '{"Statement": []}')) == "AccessDenied"
    assert denied(lambda: act.delete_bucket_policy(bucket)) == "AccessDenied"


# ------------------------------------------------------------------ provisioning


def test_a_lost_account_is_provisioned_again_by_up(pipe: Lab) -> None:
    """``up`` redoes the storage gateway's provisioning: an account lost after a crash comes back."""
    access = pipe.ctx.secrets.action_access_key.get_secret_value()
    with root_admin(pipe) as admin:
        admin.delete_user(access)
        assert access not in admin.roles()
        pipe.up()
        assert admin.roles()[access] == "user"
    assert put(action_s3(pipe, "storage-out"), pipeline.OUTPUT_BUCKET, f"lp/{RUN}/after-up.jpg")


def test_the_pipeline_resizes_with_the_action_account(pipe: Lab) -> None:
    pipeline.stand_up(pipe)  # the grants are set again, unchanged
    row = verify(pipe)
    assert row["outcome"] == "ok"
