"""The remote backend against real endpoints: the session's native lab plays the remote
clusters (its Kafka, its two store gateways, its FaaS runner, its Node-RED and its Toxiproxy),
and a second lab, ``LABKIT_BACKEND=remote`` in a data dir of its own, is pointed at them with
the clusters' credentials in its ``secrets.json`` and their CA in ``LABKIT_REMOTE_CA_BUNDLE``.

The remote lab deploys the pipeline there, pushes images through it and audits them; it reads
the metrics only through the flow's endpoint (its own data dir holds no file Node-RED writes).
Process faults are refused; network faults act on the remote's Toxiproxy, and are refused with
the setting to set when there is none.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.errors import LabConfigError, ServiceError
from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import deploy as pipeline
from labkit.pipeline import upload
from labkit.pipeline.audit import audit
from labkit.pipeline.images import generate_pool
from labkit.pipeline.metrics import metrics_path, read_lines
from labkit.stack import hops
from labkit.stack.backends.remote import METRICS_ROUTE, RemoteBackend
from labkit.stack.context import LabContext
from labkit.stack.faultstate import FaultFile
from labkit.stack.lab import Lab
from labkit.stack.secrets import SECRETS_FILE

NO_PROCESS_CONTROL = "The remote backend has no process control, so kafka cannot be stopped, started or paused"
LATENCY_MS = 3000
IMAGES = 8


def remote_settings(native: Lab) -> dict[str, str]:
    """Where a remote lab reaches the native lab's services, as a user would set them: the store
    and the FaaS runner through their hops' proxies (so the remote's Toxiproxy can degrade them),
    Kafka, storage-out and Node-RED at their own addresses, and the lab's CA."""
    backend = native.backend
    return {"remote_s3_url": backend.hop_url("client-store"), "remote_s3_out_url": native.endpoint("storage-out"),
            "remote_kafka_bootstrap": native.kafka_bootstrap, "remote_faas_url": backend.hop_url("nodered-faas"),
            "remote_nodered_url": native.endpoint("nodered"), "remote_mail_url": native.endpoint("mail"),
            "remote_toxiproxy_url": native.endpoint("toxiproxy"), "remote_ca_bundle": str(native.ctx.tls.ca_file)}


def as_environment(settings: dict[str, str]) -> dict[str, str]:
    return {f"LABKIT_{k.upper()}": v for k, v in settings.items()}


@pytest.fixture(scope="module")
def remote(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """A remote-backend lab pointed at the session's native lab, the pipeline stood up through it."""
    data_dir = tmp_path_factory.mktemp("remote-lab")
    shutil.copyfile(lab.ctx.config.data_dir / SECRETS_FILE, data_dir / SECRETS_FILE)  # the clusters' credentials
    os.chmod(data_dir / SECRETS_FILE, 0o600)
    remote = Lab.from_env(data_dir=data_dir, backend="remote", **remote_settings(lab))
    rows = remote.up()
    assert {r.name for r in rows if r.healthy} == set(remote.endpoints)
    pipeline.stand_up(remote)
    return remote


@pytest.mark.stack
def test_the_remote_lab_pushes_images_end_to_end_and_loses_none(remote: Lab, lab: Lab) -> None:
    # The action was deployed with the remote's store, not a proxy of the remote lab's own ports.
    bound = {p["key"]: p["value"] for p in remote.faas().get_action("resize")["parameters"]}
    assert bound["s3_endpoint"] == bound["s3_out_endpoint"] == remote.ctx.config.remote_s3_out_url
    assert bound["s3_endpoint"] != hops.hop_url(remote.ctx.config, "action-store")

    prefix = f"remote-{uuid.uuid4().hex[:8]}/"
    sent = upload.push(remote, generate_pool(IMAGES, seed=16), progress=False, prefix=prefix)
    assert sent["error"].isna().all() and (sent["status"] == 200).all(), sent[["key", "status", "error"]]
    rows = upload.wait_for(remote, sent["key"], timeout_s=180)
    assert (rows["outcome"] == "ok").all(), rows[["key", "outcome"]]

    report = audit(remote, prefix=prefix, grace_s=0)
    assert report.ok and report.lost == [] and report.counts["resized"] == IMAGES, report.as_dict()
    outputs = list(remote.s3("storage-out").list_objects(pipeline.OUTPUT_BUCKET, prefix=prefix, recursive=True))
    assert len(outputs) == IMAGES  # one output per image (a GIF's is a JPEG: another name)

    # Every line came through the flow's endpoint: the remote lab's file is a byte-exact copy of the
    # start of the one the remote Node-RED appends to, in another data dir.
    mirror, written = metrics_path(remote), metrics_path(lab)
    assert mirror != written and remote.ctx.config.data_dir not in written.parents
    assert written.read_bytes().startswith(mirror.read_bytes())
    assert stat.S_IMODE(mirror.stat().st_mode) == 0o600


@pytest.mark.stack
def test_the_metrics_endpoint_wants_the_node_red_login(remote: Lab) -> None:
    url = remote.endpoint("nodered") + METRICS_ROUTE
    s = remote.ctx.secrets
    assert httpx.get(url, timeout=10).status_code == 401
    refused = httpx.get(url, auth=(s.nodered_user, "not-the-password"), timeout=10)
    assert refused.status_code == 401 and b"t_upload_start" not in refused.content
    whole = httpx.get(url, auth=(s.nodered_user, s.nodered_password.get_secret_value()), timeout=10)
    size = int(whole.headers["x-metrics-size"])
    tail = httpx.get(url, params={"offset": size}, auth=(s.nodered_user, s.nodered_password.get_secret_value()),
                     timeout=10)
    assert whole.status_code == tail.status_code == 200 and tail.content == b""


@pytest.mark.stack
def test_the_env_file_is_what_the_remote_node_red_runs_with(remote: Lab, lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "nodered.env"
    env = {**as_environment(remote_settings(lab)), "LABKIT_BACKEND": "remote",
           "LABKIT_DATA_DIR": str(remote.ctx.config.data_dir)}
    result = CliRunner().invoke(main, ["remote", "nodered-env", "--out", str(out),
                                       "--metrics-file", str(metrics_path(lab))], env=env)
    assert result.exit_code == 0, result.output
    assert not any(secret in result.output for secret in remote.ctx.secrets.secret_values())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = dict(line.split("=", 1) for line in out.read_text().splitlines() if line and not line.startswith("#"))

    running = psutil.Process(lab.backend.service("nodered").record().pid).environ()
    assert written == {k: running.get(k) for k in written}
    assert {"LABKIT_KAFKA_BOOTSTRAP", "LABKIT_S3_URL", "LABKIT_FAAS_AUTH", "LABKIT_WEBHOOK_TOKEN",
            "LABKIT_NODERED_PASSWORD", "LABKIT_METRICS_FILE"} <= set(written)


@pytest.mark.stack
def test_process_faults_are_refused_and_nothing_is_touched(remote: Lab, lab: Lab) -> None:
    before = lab.backend.service("kafka").record().pid
    for verb in (remote.backend.kill, remote.backend.stop, remote.backend.pause, remote.backend.logs):
        with pytest.raises(LabConfigError, match=NO_PROCESS_CONTROL):
            verb("kafka")
    with FaultInjector(remote) as faults, pytest.raises(LabConfigError, match=NO_PROCESS_CONTROL):
        faults.inject(Fault("kill", "kafka"))
    assert FaultFile(remote.ctx.config.data_dir).entries() == []  # nothing left recorded as in force
    env = {**as_environment(remote_settings(lab)), "LABKIT_BACKEND": "remote",
           "LABKIT_DATA_DIR": str(remote.ctx.config.data_dir)}
    result = CliRunner().invoke(main, ["kill", "kafka"], env=env)
    assert result.exit_code == 2 and NO_PROCESS_CONTROL in result.output
    assert lab.backend.service("kafka").record().pid == before and lab.backend.service("kafka").healthy()


@pytest.mark.stack
def test_a_network_fault_acts_on_the_remote_toxiproxy(remote: Lab, lab: Lab) -> None:
    fault = Fault("latency", "nodered-faas", params={"latency_ms": LATENCY_MS, "jitter_ms": 0})
    proxies = lab.toxiproxy()
    with FaultInjector(remote) as faults:
        faults.inject(fault)
        try:
            assert "labkit-latency-upstream" in {t["name"] for t in proxies.toxics("nodered-faas")}
            sent = upload.push(remote, generate_pool(1, seed=17), progress=False,
                               prefix=f"remote-slow-{uuid.uuid4().hex[:8]}/")
            row = upload.wait_for(remote, sent["key"], timeout_s=180).iloc[0]
        finally:
            faults.clear(fault)
    assert row["outcome"] == "ok"
    # the invocation waited for the toxic on its way to the runner (a lower bound holds under any load)
    assert row["t_action_start"] - row["t_invoke_start"] >= LATENCY_MS
    assert not [t for t in proxies.toxics("nodered-faas") if t["name"].startswith("labkit-")]


@pytest.mark.stack
def test_without_a_remote_toxiproxy_network_faults_are_refused(lab: Lab, tmp_path: Path) -> None:
    settings = {k: v for k, v in remote_settings(lab).items() if k != "remote_toxiproxy_url"}
    shutil.copyfile(lab.ctx.config.data_dir / SECRETS_FILE, tmp_path / SECRETS_FILE)
    bare = Lab.from_env(data_dir=tmp_path, backend="remote", **settings)
    with FaultInjector(bare) as faults, pytest.raises(LabConfigError, match="Fix: set LABKIT_REMOTE_TOXIPROXY_URL"):
        faults.inject(Fault("latency", "nodered-faas", params={"latency_ms": 100}))
    assert not [t for t in lab.toxiproxy().toxics("nodered-faas") if t["name"].startswith("labkit-")]


@pytest.mark.stack
def test_endpoints_with_a_private_ca_need_its_bundle(lab: Lab, tmp_path: Path) -> None:
    settings = {k: v for k, v in remote_settings(lab).items() if k != "remote_ca_bundle"}
    with pytest.raises(ServiceError, match="LABKIT_REMOTE_CA_BUNDLE"):
        Lab.from_env(data_dir=tmp_path, backend="remote", **settings).up()


# -- no service needed ------------------------------------------------------------------------
def test_hops_lead_to_the_remote_endpoints(tmp_path: Path) -> None:
    ctx = LabContext.from_env(data_dir=tmp_path, backend="remote", remote_s3_url="https://s3.example",
                              remote_s3_out_url="https://s3-out.example", remote_faas_url="https://ow.example",
                              remote_kafka_bootstrap="k1.example:9092,k2.example:9092")
    backend = RemoteBackend(ctx)
    assert {name: backend.hop_url(name) for name in ("client-store", "action-store", "nodered-faas", "store-kafka")} \
        == {"client-store": "https://s3.example", "action-store": "https://s3-out.example",
            "nodered-faas": "https://ow.example", "store-kafka": "k1.example:9092,k2.example:9092"}
    with pytest.raises(LabConfigError, match="Hop store-webhook leads to nodered.*Fix: set LABKIT_REMOTE_NODERED_URL"):
        backend.hop_url("store-webhook")
    with pytest.raises(LabConfigError, match="Unknown hop"):
        backend.hop_url("store-nowhere")
    with pytest.raises(LabConfigError, match="needs LABKIT_REMOTE_FAAS_URL|needs LABKIT_REMOTE_KAFKA"):
        RemoteBackend(LabContext.from_env(data_dir=tmp_path, backend="remote",
                                          remote_s3_url="https://s3.example")).nodered_environment()


def test_a_ca_bundle_that_is_not_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    ctx = LabContext.from_env(data_dir=tmp_path, backend="remote", remote_ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(LabConfigError, match="LABKIT_REMOTE_CA_BUNDLE=.* is not a file. Fix:") as refused:
        ctx.verify
    assert "\n" not in str(refused.value)


def test_the_env_file_command_is_for_a_remote_lab(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["remote", "nodered-env", "--out", str(tmp_path / "x.env")],
                                env={"LABKIT_BACKEND": "native", "LABKIT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "Fix: set LABKIT_BACKEND=remote" in result.output
    assert not (tmp_path / "x.env").exists()
