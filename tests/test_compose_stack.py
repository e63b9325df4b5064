"""The compose backend for real, once per test session: a Docker engine of the suite's own
(:class:`labkit.stack.docker.Engine`: its socket, data and run state under
``CACHE_DIR/docker``, never the system's), the images built from the pins (cached there
between runs: a warm cache builds nothing), ``labkit up`` with ``LABKIT_BACKEND=compose``
on ``stack/compose.yaml`` as it is, 20 images through the pipeline and audited, a container
stopped and the pipeline recovering with nothing lost, then ``labkit down`` and the engine
stopped with no process of it left.

Container traffic stays in the compose network the test creates (and the ports it
publishes on 127.0.0.1); only the image builds reach Debian's package mirror.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import psutil
import pytest

from labkit.pipeline import deploy as pipeline
from labkit.pipeline import upload
from labkit.pipeline.audit import audit
from labkit.pipeline.images import generate_pool
from labkit.stack.backends.compose import ComposeBackend
from labkit.stack.config import load_config
from labkit.stack.docker import Engine, ensure_compose_plugin
from labkit.stack.images import image_specs
from labkit.stack.lab import Lab
from tests.ports import PortPlan

# A cold image cache builds six images on vfs (about 20 minutes on a busy 2-core machine), in
# the first test's setup.
pytestmark = [pytest.mark.stack, pytest.mark.timeout(3600)]

IMAGES = 20


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The suite's own dockerd, the CLI pointed at it; stopped at the end, and checked gone."""
    missing = [tool for tool in ("dockerd", "docker", "debootstrap", "go") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the compose stack test needs {', '.join(missing)}. Fix: `make test-deps` "
                    "(apt-get install docker.io debootstrap) and Go.", pytrace=False)
    engine = Engine(load_config().cache_dir)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in engine.env().items():
            mp.setenv(key, value)
        try:
            engine.start()
            ensure_compose_plugin(engine.config_dir)
            yield engine
        finally:
            engine.stop()
    assert engine.processes() == [], "the Docker engine left processes behind"


def _offset(request: pytest.FixtureRequest) -> int:
    """The session slot's bench offset (that test's lab is up only while it runs, never beside this
    module's), or ``LABKIT_COMPOSE_TEST_PORT_OFFSET`` to run this module alone beside other runs."""
    if pinned := os.environ.get("LABKIT_COMPOSE_TEST_PORT_OFFSET"):
        return int(pinned)
    ports: PortPlan = request.getfixturevalue("ports")
    return ports.offset("bench")


@pytest.fixture(scope="module")
def clab(engine: Engine, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab on the compose backend, up (images built when their sources changed); down and wiped at the end."""
    data_dir = tmp_path_factory.mktemp("compose-lab")
    lab = Lab.from_env(data_dir=data_dir, port_offset=_offset(request), backend="compose")
    try:
        lab.up()
        yield lab
    finally:
        lab.down(wipe=True)
    assert _containers(engine) == [], "labkit down left containers behind"


def _containers(engine: Engine) -> list[str]:
    out = subprocess.run(["docker", "ps", "--all", "--quiet"], capture_output=True, text=True,
                         env=engine.child_env(), check=False)
    return out.stdout.split()


def test_up_reaches_all_healthy_from_the_images_built_from_the_pins(clab: Lab, engine: Engine) -> None:
    rows = clab.backend.status()
    assert {r.name: (r.state, r.healthy) for r in rows} == {r.name: ("up", True) for r in rows}
    used = subprocess.run(["docker", "ps", "--format", "{{.Image}}"], capture_output=True, text=True,
                          env=engine.child_env(), check=True).stdout.split()
    assert set(used) == {spec.tag for spec in image_specs()}  # no profile service, nothing pulled


def test_ports_are_published_on_loopback_only(clab: Lab, engine: Engine) -> None:
    published = subprocess.run(["docker", "ps", "--format", "{{.Ports}}"], capture_output=True, text=True,
                               env=engine.child_env(), check=True).stdout
    bindings = [b.strip() for line in published.splitlines() for b in line.split(",") if "->" in b]
    assert bindings and all(b.startswith("127.0.0.1:") for b in bindings), bindings


def test_secrets_are_in_a_private_env_file_and_on_no_command_line(clab: Lab) -> None:
    env_file = clab.backend.env_file
    assert env_file.stat().st_mode & 0o777 == 0o600
    secrets = clab.ctx.secrets.secret_values()
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        assert not any(s in line for s in secrets), f"a secret on the command line of pid {proc.pid}"


def test_twenty_images_end_to_end_and_audited(clab: Lab) -> None:
    pipeline.stand_up(clab)
    prefix = f"compose-{uuid.uuid4().hex[:8]}/"
    sent = upload.push(clab, generate_pool(IMAGES, seed=17, sizes=[(640, 480)]), concurrency=4,
                       progress=False, prefix=prefix)
    assert (sent["status"] == 200).all(), sent
    done = upload.wait_for(clab, sent["key"], timeout_s=300)
    assert done["outcome"].tolist() == ["ok"] * IMAGES
    assert audit(clab, prefix=prefix, grace_s=0).counts == {"resized": IMAGES, "stale": 0, "dead_lettered": 0,
                                                            "pending": 0, "lost": 0}


def test_a_stopped_container_recovers_with_nothing_lost(clab: Lab) -> None:
    """Node-RED stopped: objects stored meanwhile wait as events in Kafka, and its consumer
    takes them up from its committed offset once it is back."""
    pipeline.stand_up(clab)
    prefix = f"stopped-{uuid.uuid4().hex[:8]}/"
    clab.backend.stop("nodered")
    assert {r.name: r.state for r in clab.backend.status()}["nodered"] == "down"
    pool = generate_pool(5, seed=23, sizes=[(320, 240)])
    s3 = clab.s3("storage")
    keys = []
    for image in pool:
        key = prefix + image.key
        s3.put_object("dit247", key, io.BytesIO(image.data), len(image.data), content_type=image.content_type)
        keys.append(key)
    clab.backend.start("nodered")  # waits until healthy
    done = upload.wait_for(clab, keys, timeout_s=300)
    assert done["outcome"].tolist() == ["ok"] * len(keys)
    assert audit(clab, prefix=prefix, grace_s=0).counts == {"resized": len(keys), "stale": 0, "dead_lettered": 0,
                                                            "pending": 0, "lost": 0}


def test_labkit_down_then_no_container_is_left(clab: Lab, engine: Engine) -> None:
    clab.down()
    assert _containers(engine) == []
    assert all(r.state == "down" for r in clab.backend.status())
    assert isinstance(clab.backend, ComposeBackend) and os.environ["DOCKER_HOST"].endswith("docker.sock")
