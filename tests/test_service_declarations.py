"""Every declared service is known everywhere it must be (in the spirit of testcontainers'
``test_community_definition.py``), and adding one takes what docs/extending.md says.

A service is declared once, in its module under ``labkit/stack/services/``. What is derived
from that declaration (the native backend, the config's ports and remote settings, the remote
backend) is checked to have picked it up; what cannot be derived (its compose entry, its pins
in ``stack/versions.toml``, a line of docs, a test) is checked to exist. The check runs on the
real services, on a fake one that is declared nowhere else, and on the worked example of
docs/extending.md added to a copy of the repository.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from labkit.stack.backends.compose import port_var
from labkit.stack.backends.native import NativeBackend
from labkit.stack.backends.remote import REMOTE_FIELDS
from labkit.stack.config import DEFAULT_PORTS, LabConfig
from labkit.stack.context import LabContext
from labkit.stack.install import InstallStep
from labkit.stack.readiness import PortReady, Readiness
from labkit.stack.services import CRASH_TESTED, PATH_SERVICES, SERVICE_NAMES, SERVICE_TYPES, Service
from labkit.stack.services.catalog import PACKAGE_DIR, declared_hops
from labkit.stack.services.declarations import RemoteEndpoint

ROOT = Path(__file__).resolve().parents[1]
EXTENDING = ROOT / "docs" / "extending.md"
# Modules of the services package that hold the machinery, not a service.
MACHINERY = {"__init__", "base", "catalog", "declarations"}
PLACES = ("native", "config", "remote", "compose", "versions", "docs", "tests")


@dataclasses.dataclass(frozen=True)
class Places:
    """Everywhere a service must appear, as one checkout of the repository has it."""

    native: frozenset[str]  # the services NativeBackend runs
    ports: Mapping[str, int]  # labkit.stack.config.DEFAULT_PORTS
    settings: frozenset[str]  # LabConfig's fields
    remote: Mapping[str, str]  # the remote backend's service -> setting
    compose: Mapping  # stack/compose.yaml
    pins: Mapping  # stack/versions.toml
    docs: str  # README.md and docs/*.md
    tests: str  # every tests/**/test_*.py

    @classmethod
    def of(cls, root: Path, scratch: Path) -> Places:
        ctx = LabContext.from_env(data_dir=scratch / "data", cache_dir=scratch / "cache")
        docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        return cls(native=frozenset(NativeBackend(ctx).services), ports=DEFAULT_PORTS,
                   settings=frozenset(LabConfig.model_fields), remote=REMOTE_FIELDS,
                   compose=yaml.safe_load((root / "stack" / "compose.yaml").read_text()),
                   pins=tomllib.loads((root / "stack" / "versions.toml").read_text()),
                   docs="\n".join(p.read_text() for p in docs),
                   tests="\n".join(p.read_text() for p in sorted((root / "tests").rglob("test_*.py"))))


def missing_parts(service: type[Service], places: Places) -> list[str]:
    """What is missing for ``service``, one line per problem, each starting with its place."""
    return [*_native(service, places), *_config(service, places), *_remote(service, places),
            *_compose(service, places), *_versions(service, places), *_docs(service, places),
            *_tests(service, places)]


def _native(service: type[Service], places: Places) -> list[str]:
    return [] if service.name in places.native else [f"native: NativeBackend does not run {service.name}"]


def _config(service: type[Service], places: Places) -> list[str]:
    return [f"config: DEFAULT_PORTS[{port!r}] is {places.ports.get(port)}, declared {number}"
            for port, number in service.listeners().items() if places.ports.get(port) != number]


def _remote(service: type[Service], places: Places) -> list[str]:
    if service.remote is None:
        return []  # no remote counterpart
    setting, problems = service.remote.setting, []
    if setting not in places.settings:
        problems.append(f"remote: LabConfig has no field {setting}")
    if places.remote.get(service.name) != setting:
        problems.append(f"remote: the remote backend does not read {setting} for {service.name}")
    return problems


def _compose(service: type[Service], places: Places) -> list[str]:
    name = service.compose_name()
    entry = places.compose.get("services", {}).get(name)
    if entry is None:
        return [f"compose: stack/compose.yaml has no service {name!r}"]
    problems = []
    wanted = sorted(f"127.0.0.1:${{{port_var(p)}:-{n}}}:{n}" for p, n in service.published_ports().items())
    if sorted(entry.get("ports", [])) != wanted:
        problems.append(f"compose: {name} publishes {entry.get('ports', [])}, declared {wanted}")
    if not (entry.get("healthcheck") or {}).get("test"):
        problems.append(f"compose: {name} has no healthcheck")
    after = {t.compose_name() for t in SERVICE_TYPES if t.name in service.after}
    if set(entry.get("depends_on", {})) != after:
        problems.append(f"compose: {name} depends on {sorted(entry.get('depends_on', {}))}, declared {sorted(after)}")
    return problems


def _versions(service: type[Service], places: Places) -> list[str]:
    needed = {key: ("version",) for key in service.pins()}
    if service.compose_pin():  # None: labkit's own code in both backends (the FaaS runner)
        needed[service.compose_pin()] = ("version", "image")
    return [f"versions: stack/versions.toml has no {field} in [{key}]"
            for key, fields in needed.items() for field in fields if field not in places.pins.get(key, {})]


def _docs(service: type[Service], places: Places) -> list[str]:
    return [] if f"`{service.name}`" in places.docs else [f"docs: `{service.name}` is named in no README.md or docs/"]


def _tests(service: type[Service], places: Places) -> list[str]:
    test = f"def test_{service.name.replace('-', '_')}_"
    return [] if test in places.tests else [f"tests: no `{test}...` under tests/"]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Places:
    return Places.of(ROOT, tmp_path_factory.mktemp("places"))


# -- the real services ----------------------------------------------------------
@pytest.mark.parametrize("service", SERVICE_TYPES, ids=SERVICE_NAMES)
def test_every_declared_service_is_known_everywhere(service: type[Service], places: Places) -> None:
    assert missing_parts(service, places) == []


def test_every_service_module_declares_a_service() -> None:
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")} - MACHINERY
    declaring = {t.__module__.rpartition(".")[2] for t in SERVICE_TYPES}
    assert modules == declaring, f"modules that declare no service (a class without `name`?): {modules - declaring}"


def test_names_and_ports_are_declared_once() -> None:
    assert len(set(SERVICE_NAMES)) == len(SERVICE_NAMES)
    listeners = [(port, number) for t in SERVICE_TYPES for port, number in t.listeners().items()]
    assert len({port for port, _ in listeners}) == len(listeners), "two services declare one port name"
    assert len({number for _, number in listeners}) == len(listeners), "two listeners share a default port"
    assert len({t.compose_name() for t in SERVICE_TYPES}) == len(SERVICE_TYPES)


def test_a_service_starts_after_the_ones_it_sends_events_to() -> None:
    order = {t.name: t.start_order for t in SERVICE_TYPES}
    for t in SERVICE_TYPES:
        assert set(t.after) <= set(order), f"{t.name}: after names an unknown service"
        assert all(order[d] < t.start_order for d in t.after), f"{t.name} starts before what it waits for"


def test_each_hop_ends_at_a_listener_of_the_service_that_declares_it() -> None:
    for t in SERVICE_TYPES:
        assert all(h.upstream in t.default_ports for h in t.hops), t.name
    names = [h.name for h in declared_hops()]
    assert len(set(names)) == len(names)


def test_the_derived_tables_are_the_ones_the_lab_had() -> None:
    """Ports, settings, order and the experiments' lists, as they were written out by hand."""
    assert SERVICE_NAMES == ("mail", "toxiproxy", "kafka", "faas", "nodered", "storage", "storage-out")
    assert dict(DEFAULT_PORTS) == {
        "storage": 7070, "storage-out": 7071, "kafka": 9092, "kafka-controller": 9093, "faas": 3233,
        "nodered": 1880, "nodered-tls": 1881, "mail-smtp": 1025, "mail-http": 8025, "toxiproxy": 8474,
        "kafka-proxied": 9094, "hop-client-store": 8481, "hop-store-kafka": 8482, "hop-nodered-faas": 8483,
        "hop-action-store": 8484, "hop-store-webhook": 8485,
        # the replicated Kafka's brokers 2 and 3 (LABKIT_KAFKA_BROKERS=3), and the store's hops to them
        "kafka-2": 9192, "kafka-2-controller": 9193, "kafka-2-proxied": 9194, "kafka-3": 9292,
        "kafka-3-controller": 9293, "kafka-3-proxied": 9294, "hop-store-kafka-2": 8486, "hop-store-kafka-3": 8487}
    assert dict(REMOTE_FIELDS) == {
        "storage": "remote_s3_url", "storage-out": "remote_s3_out_url", "kafka": "remote_kafka_bootstrap",
        "faas": "remote_faas_url", "nodered": "remote_nodered_url", "mail": "remote_mail_url",
        "toxiproxy": "remote_toxiproxy_url"}
    assert set(PATH_SERVICES) == {"storage", "kafka", "nodered", "faas", "storage-out"}
    assert set(CRASH_TESTED) == {"storage", "storage-out", "kafka", "nodered", "faas", "mail"}
    assert [h.name for h in declared_hops()] == ["client-store", "store-kafka", "nodered-faas", "action-store",
                                                 "store-webhook"]


def test_the_remote_backend_docs_list_every_setting() -> None:
    table = section((ROOT / "docs" / "scaling.md").read_text(), "The remote backend, as it is")
    listed = set(re.findall(r"^\| `(LABKIT_REMOTE_\w+)` \| `([\w-]+)`", table, re.M))
    assert listed == {(t.remote.variable, t.name) for t in SERVICE_TYPES if t.remote}


# -- a service declared nowhere else ---------------------------------------------
@pytest.fixture
def fake_service() -> type[Service]:
    """A service declared in this test only: no module of the package, so no place knows it."""

    class Memcache(Service):
        name = "memcache"
        default_ports = {"memcache": 11211}
        pin_key = "memcached"
        remote = RemoteEndpoint("remote_memcache_url", "a memcached server")

        def install_step(self) -> InstallStep | None:
            return None

        def command(self) -> list[str]:
            return ["memcached", "-p", str(self.ports["memcache"])]

        def readiness(self) -> Readiness:
            return PortReady(self.ports["memcache"], self.host)

        def endpoint(self) -> str:
            return f"{self.host}:{self.ports['memcache']}"

    return Memcache


def test_a_service_declared_nowhere_else_is_reported_missing_from_every_place(fake_service, places) -> None:
    problems = missing_parts(fake_service, places)
    assert {p.partition(":")[0] for p in problems} == set(PLACES), problems
    assert "native: NativeBackend does not run memcache" in problems
    assert "config: DEFAULT_PORTS['memcache'] is None, declared 11211" in problems
    assert "remote: LabConfig has no field remote_memcache_url" in problems
    assert "compose: stack/compose.yaml has no service 'memcache'" in problems
    assert "versions: stack/versions.toml has no version in [memcached]" in problems
    shown = re.search(r"^```text\n(.*?)^```$", section(EXTENDING.read_text(), "Adding a service"), re.M | re.S)
    assert shown and set(shown[1].splitlines()) <= set(problems), "docs/extending.md shows other lines"


def without(places: Places, place: str, service: type[Service]) -> Places:
    """``places`` with ``service`` taken out of ``place`` only."""
    name, key = service.name, service.compose_name()
    changes = {
        "native": {"native": places.native - {name}},
        "config": {"ports": {p: n for p, n in places.ports.items() if p not in service.listeners()}},
        "remote": {"remote": {k: v for k, v in places.remote.items() if k != name}},
        "compose": {"compose": {"services": {k: v for k, v in places.compose["services"].items() if k != key}}},
        "versions": {"pins": {k: v for k, v in places.pins.items() if k not in service.pins()}},
        "docs": {"docs": places.docs.replace(f"`{name}`", name)},
        "tests": {"tests": re.sub(rf"def test_{name.replace('-', '_')}_", "def test_", places.tests)},
    }
    return dataclasses.replace(places, **changes[place])


@pytest.mark.parametrize("place", PLACES)
def test_a_service_missing_from_one_place_is_reported_there_only(place: str, places: Places) -> None:
    mail = next(t for t in SERVICE_TYPES if t.name == "mail")
    problems = missing_parts(mail, without(places, place, mail))
    assert problems and {p.partition(":")[0] for p in problems} == {place}, problems


def test_a_compose_entry_without_the_declared_ports_or_healthcheck_is_reported(places: Places) -> None:
    kafka = next(t for t in SERVICE_TYPES if t.name == "kafka")
    entry = {k: v for k, v in places.compose["services"]["kafka"].items() if k != "healthcheck"}
    entry["ports"] = ["127.0.0.1:9092:9092"]
    broken = dataclasses.replace(places, compose={"services": {**places.compose["services"], "kafka": entry}})
    problems = missing_parts(kafka, broken)
    assert problems == ["compose: kafka publishes ['127.0.0.1:9092:9092'], declared "
                        "['127.0.0.1:${LABKIT_PORT_KAFKA:-9092}:9092']", "compose: kafka has no healthcheck"]


# -- the worked example of docs/extending.md ---------------------------------------
EXAMPLE_MODULE = '''\
"""Metrics from short jobs: the Prometheus Pushgateway keeps what a job pushed until it is scraped."""

from __future__ import annotations

from labkit.stack.install import GoBinary, InstallStep
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import RemoteEndpoint
from labkit.stack.versions import pin


class Pushgateway(Service):
    name = "pushgateway"
    start_order = 80  # after the pipeline's services: nothing waits for it
    default_ports = {"pushgateway": 9091}
    pin_key = "pushgateway"
    remote = RemoteEndpoint("remote_pushgateway_url", "a Pushgateway's base URL")

    def install_step(self) -> InstallStep:
        p = pin("pushgateway")
        return GoBinary("pushgateway", p["version"], package=p["go_package"], binary=p["binary"])

    def command(self) -> list[str]:
        binary = self.install_step().target(self.config.cache_dir) / "pushgateway"
        return [str(binary), f"--web.listen-address={self.host}:{self.ports['pushgateway']}"]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/-/ready")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['pushgateway']}"
'''

EXAMPLE_PIN = '''\
[pushgateway]
version = "v1.11.0"
go_package = "github.com/prometheus/pushgateway"
binary = "pushgateway"
image = "prom/pushgateway"
'''

EXAMPLE_COMPOSE = '''\
  pushgateway:
    image: prom/pushgateway:v1.11.0
    command: ["--web.listen-address=:9091"]
    ports:
      - "127.0.0.1:${LABKIT_PORT_PUSHGATEWAY:-9091}:9091"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9091/-/ready"]
      interval: 5s
      timeout: 5s
      retries: 12
      start_period: 5s
'''

# docs/extending.md's code blocks, by the path in their info string -> the text above.
EXAMPLE_FILES = {"labkit/stack/services/pushgateway.py": EXAMPLE_MODULE, "stack/versions.toml": EXAMPLE_PIN,
                 "stack/compose.yaml": EXAMPLE_COMPOSE}

# Run in a copy of the repository, with its labkit first on the path.
CHECK_IN_COPY = """
import json, sys
from pathlib import Path
from labkit.stack.backends.compose import ComposeBackend
from labkit.stack.backends.native import NativeBackend
from labkit.stack.context import LabContext
from labkit.stack.services import SERVICE_TYPES
from tests.test_service_declarations import Places, missing_parts

scratch = Path(sys.argv[1])
ctx = LabContext.from_env(data_dir=scratch / "data", cache_dir=scratch / "cache", port_offset=100)
print(json.dumps({
    "missing": {t.name: missing_parts(t, Places.of(Path.cwd(), scratch)) for t in SERVICE_TYPES},
    "command": NativeBackend(ctx).services["pushgateway"].command()[1:],
    "env": ComposeBackend(ctx).compose_env()["LABKIT_PORT_PUSHGATEWAY"],
    "setting": LabContext.from_env(remote_pushgateway_url="http://pg.example:9091").config.remote_pushgateway_url,
}))
"""


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading``, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match[1]


def doc_blocks() -> dict[str, str]:
    """The code blocks of docs/extending.md's "Adding a service" whose info string names a file."""
    text = section(EXTENDING.read_text(), "Adding a service")
    return {m["path"]: m["code"] for m in re.finditer(r"^```\w+ (?P<path>\S+)\n(?P<code>.*?)^```$", text, re.M | re.S)}


def test_the_docs_show_the_example_verbatim() -> None:
    assert doc_blocks() == EXAMPLE_FILES


def add_example(repo: Path, copy: Path) -> None:
    """Copy what the check reads of ``repo`` to ``copy``, then make the edits the docs list."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for part in ("labkit", "tests", "docs"):
        shutil.copytree(repo / part, copy / part, ignore=skip)
    (copy / "stack").mkdir()
    shutil.copy2(repo / "README.md", copy / "README.md")
    (copy / "labkit" / "stack" / "services" / "pushgateway.py").write_text(EXAMPLE_MODULE)
    compose = (repo / "stack" / "compose.yaml").read_text()
    head, sep, tail = compose.partition("\nnetworks:\n")
    (copy / "stack" / "compose.yaml").write_text(f"{head}\n{EXAMPLE_COMPOSE}{sep}{tail}")
    (copy / "stack" / "versions.toml").write_text((repo / "stack" / "versions.toml").read_text() + "\n" + EXAMPLE_PIN)


def test_pushgateway_example_is_complete_once_added(tmp_path: Path) -> None:
    """The module, its pin and its compose entry (plus the docs and this test naming it) are all
    it takes: every derived place picks the service up, and the completeness check passes."""
    copy = tmp_path / "repo"
    add_example(ROOT, copy)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")} | {"PYTHONPATH": str(copy)}
    done = subprocess.run([sys.executable, "-c", CHECK_IN_COPY, str(tmp_path / "scratch")], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert "pushgateway" in found["missing"]
    assert {name: problems for name, problems in found["missing"].items() if problems} == {}
    assert found["command"] == ["--web.listen-address=127.0.0.1:9191"]
    assert found["env"] == "9191"
    assert found["setting"] == "http://pg.example:9091"
