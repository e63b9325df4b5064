"""The compose backend, checked without a Docker engine (tests/test_compose_stack.py runs it).

``stack/compose.yaml`` must describe the same lab as the native backend: the
same service names, ports, start order and pinned versions, every hop of the
pipeline through its Toxiproxy proxy (``stack/toxiproxy/compose-proxies.json``),
every variable the Node-RED flow reads, loopback-only ports and no secret in the
file; its images are labkit's, built from ``stack/images``, and the optional
profiles (openwhisk, kafka-ui) keep their upstream pins. ``ComposeBackend`` is
driven against a fake ``docker`` on PATH that records every call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from labkit.errors import LabConfigError
from labkit.pipeline.upload import metrics_path
from labkit.stack.backends.compose import (
    COMPOSE_FILE,
    FIX,
    KAFKA_UI_PORT,
    METRICS_DIR_VAR,
    METRICS_MOUNT,
    NETWORK,
    NETWORK_ENDPOINTS,
    OPENWHISK_PORT,
    PIN_KEYS,
    PROXIES_FILE,
    SECRET_FIELDS,
    SECRET_VARS,
    UNPUBLISHED_PORTS,
    ComposeBackend,
    compose_proxies,
    port_var,
)
from labkit.stack.backends.native import NativeBackend
from labkit.stack.config import DEFAULT_PORTS, LabConfig
from labkit.stack.context import LabContext
from labkit.stack.hops import HOP_NAMES, HOPS
from labkit.stack.images import IMAGES_DIR, image_specs
from labkit.stack.services import SERVICE_NAMES, SERVICE_TYPES
from labkit.stack.services.nodered import MAX_BODY_BYTES, METRICS_FILE, NodeRed
from labkit.stack.services.storage import TOPIC, WEBHOOK_PATH, Storage, StorageOut
from labkit.stack.versions import STACK_DIR, pins

COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = IMAGES_DIR / "nodered" / "Dockerfile"
ENV_EXAMPLE = STACK_DIR / "compose.env.example"
FLOWS_FILE = STACK_DIR / "nodered" / "flows.json"
OPENWHISK_CONF = STACK_DIR / "openwhisk" / "openwhisk.conf"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VAR_RE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
# The optional profiles' services, from Docker Hub: service -> (profile, host port's name, port)
PROFILE_SERVICES = {"kafka-ui": ("kafka-ui", "kafka-ui", KAFKA_UI_PORT),
                    "openwhisk": ("openwhisk", "openwhisk", OPENWHISK_PORT)}
EXTRA_SERVICES = set(PROFILE_SERVICES)
# compose service -> the image labkit builds for it (stack/images/<name>)
LABKIT_IMAGES = {"mail": "mailpit", "toxiproxy": "toxiproxy", "kafka": "kafka", "faas": "faas",
                 "nodered": "nodered", "storage": "versitygw", "storage-out": "versitygw"}
SERVICE_TYPE = {t.name: t for t in SERVICE_TYPES}


def with_defaults(text: str) -> str:
    """Replace every ``${VAR:-default}`` by its default (ports are the only variables that have one)."""
    return VAR_RE.sub(lambda m: m["arg"] if m["op"] in (":-", "-") else m[0], text)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for this file: ``$$`` escapes, defaults, required variables."""
    def one(m: re.Match) -> str:
        value = env.get(m["name"])
        if m["op"] in (":?", "?") and not value:
            raise KeyError(f"required variable {m['name']} is missing: {m['arg']}")
        return value if value else (m["arg"] if m["op"] in (":-", "-") else "")
    return VAR_RE.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def strings(node) -> list[str]:
    """Every string in the parsed file (comments are not part of it, as for compose)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def render(node, env: dict[str, str]):
    """The parsed file with every string interpolated."""
    if isinstance(node, dict):
        return {render(k, env): render(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [render(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


VARIABLES = [m for s in strings(COMPOSE) for m in VAR_RE.finditer(s)]
REQUIRED_VARS = sorted({m["name"] for m in VARIABLES if m["op"] in (":?", "?")})


def expected_host_ports(service: str) -> dict[str, int]:
    """The host ports a service publishes, by port name: LabConfig's defaults."""
    if service in PROFILE_SERVICES:
        _, name, port = PROFILE_SERVICES[service]
        return {name: port}
    config = LabConfig()
    return {p: config.port(p) for p in SERVICE_TYPE[service].published_ports()}


def compose_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def dummy_env() -> dict[str, str]:
    """A value for every variable compose.yaml requires (the secrets and the metrics directory)."""
    return {var: f"dummy-{var.lower()}" for var in REQUIRED_VARS}


def service_of(port_name: str) -> str:
    """The native service that owns a port named in DEFAULT_PORTS."""
    return next(t.name for t in SERVICE_TYPES if port_name in t.listeners())


def container_listeners(service: str) -> set[int]:
    """The ports a compose service listens on inside the network: its published container
    ports, and for Kafka every listener bound to all interfaces."""
    ports = {int(with_defaults(e).split(":")[-1]) for e in SERVICES[service].get("ports", [])}
    if service == "kafka":
        listeners = SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"].split(",")
        ports |= {int(address.rpartition(":")[2]) for _, address in (ln.split("://") for ln in listeners)
                  if address.startswith("0.0.0.0:")}
    return ports


def required_ref(value: str) -> str | None:
    """The variable when ``value`` is exactly one ``${VAR:?message}`` with a message, else None."""
    m = VAR_RE.fullmatch(value)
    return m["name"] if m and m["op"] == ":?" and m["arg"].strip() else None


def flow_variables() -> set[str]:
    """Every LABKIT_* variable stack/nodered/flows.json reads from Node-RED's environment.

    The flow reads them as ``env.get("NAME")`` or ``${NAME}``, passes their names to a
    helper (``s3client("LABKIT_S3_URL")`` calls ``env.get(urlVar)``), names them in a
    node property of type ``env`` (``filenameType: "env"``) or in an env entry of type
    ``env``; every quoted ``LABKIT_*`` literal counts, so no indirection is missed.
    """
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (node.get(f"{key}Type") == "env"
                                               or (key == "value" and node.get("type") == "env")):
                    found.update(re.findall(r"^\$?\{?(LABKIT_\w+)\}?$", value))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            found.update(re.findall(r"env\.get\(\s*[\"'](LABKIT_\w+)[\"']", node))
            found.update(re.findall(r"\$\{(LABKIT_\w+)\}", node))
            found.update(re.findall(r"[\"'`](LABKIT_\w+)[\"'`]", node))

    walk(json.loads(FLOWS_FILE.read_text()))
    return found


# -- the compose file --------------------------------------------------------
def test_services_are_the_native_ones_plus_the_optional_profiles():
    assert set(SERVICES) == set(SERVICE_NAMES) | EXTRA_SERVICES
    for name, service in SERVICES.items():
        assert service.get("profiles", []) == ([PROFILE_SERVICES[name][0]] if name in PROFILE_SERVICES else []), name


def test_published_ports_bind_loopback_and_equal_the_config_defaults():
    assert {f"hop-{name}" for name in HOP_NAMES} <= set(expected_host_ports("toxiproxy"))
    for name, service in SERVICES.items():
        entries = service.get("ports", [])
        assert all(isinstance(e, str) for e in entries), f"{name}: use the short 'IP:HOST:CONTAINER' syntax"
        published = [with_defaults(e).split(":") for e in entries]
        assert all(len(p) == 3 and p[0] == "127.0.0.1" for p in published), f"{name} publishes beyond 127.0.0.1"
        assert sorted(int(p[1]) for p in published) == sorted(expected_host_ports(name).values()), name
        # Containers listen on the default ports; only the host side moves with the offset.
        # (OpenWhisk's controller listens on 3233, beside the runner's 3233 on the host.)
        if name != "openwhisk":
            assert all(p[1] == p[2] for p in published), f"{name}: container port != default host port"


def test_each_host_port_is_the_variable_labkit_writes():
    for name in SERVICES:
        for port_name, port in expected_host_ports(name).items():
            default = DEFAULT_PORTS.get(port_name, port)
            entry = f"127.0.0.1:${{{port_var(port_name)}:-{default}}}:"
            assert any(e.startswith(entry) for e in SERVICES[name]["ports"]), f"{name}: expected {entry}..."


def test_kafka_advertises_internal_host_and_proxied_listeners(tmp_path):
    env = SERVICES["kafka"]["environment"]
    listeners = dict(part.split("://") for part in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(part.split("://") for part in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(part.split(":") for part in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert advertised["INTERNAL"] == NETWORK_ENDPOINTS["kafka"] == "kafka:19092"
    assert advertised["HOST"] == f"127.0.0.1:${{{port_var('kafka')}:-{DEFAULT_PORTS['kafka']}}}"
    # PROXIED: bound in the container, advertised as the store-kafka hop's proxy, like natively.
    assert listeners["PROXIED"] == f"0.0.0.0:{DEFAULT_PORTS['kafka-proxied']}"
    assert advertised["PROXIED"] == backend_at(tmp_path).hop_address("store-kafka") == "toxiproxy:8482"
    assert set(protocols) == set(listeners) and set(protocols.values()) == {"PLAINTEXT"}
    assert set(advertised) == set(listeners) - {"CONTROLLER"}
    assert "kafka-proxied" in UNPUBLISHED_PORTS  # only the proxy connects to it
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node


def test_storage_sends_events_through_the_store_kafka_hop(tmp_path):
    env = SERVICES["storage"]["environment"]
    assert env["VGW_EVENT_KAFKA_URL"] == backend_at(tmp_path).hop_address("store-kafka")
    assert env["VGW_EVENT_KAFKA_TOPIC"] == TOPIC


def test_storage_out_sends_events_to_the_nodered_webhook_through_the_store_webhook_hop(tmp_path):
    url = SERVICES["storage-out"]["environment"]["VGW_EVENT_WEBHOOK_URL"]
    hop = re.escape(backend_at(tmp_path).hop_url("store-webhook"))
    path = re.escape(WEBHOOK_PATH).replace(re.escape("{token}"), r"\$\{LABKIT_WEBHOOK_TOKEN:\?[^}]+\}")
    assert re.fullmatch(hop + path, url), url
    assert url.startswith("http://toxiproxy:8485/")


# -- the hops: Toxiproxy's proxies ----------------------------------------------
def test_toxiproxy_config_file_creates_every_hop_to_its_service():
    proxies = json.loads(PROXIES_FILE.read_text())
    assert proxies == compose_proxies()
    by_name = {p["name"]: p for p in proxies}
    assert list(by_name) == list(HOP_NAMES)
    for h in HOPS:
        proxy = by_name[h.name]
        assert proxy["listen"] == f"0.0.0.0:{DEFAULT_PORTS[h.listen]}", h.name
        service, _, port = proxy["upstream"].partition(":")
        assert (service, int(port)) == (service_of(h.upstream), DEFAULT_PORTS[h.upstream]), h.name
        assert int(port) in container_listeners(service), f"{h.name}: {service} does not listen on {port}"
        assert proxy.get("enabled", True) is True


def test_toxiproxy_loads_the_config_file_and_publishes_every_hop():
    toxiproxy = SERVICES["toxiproxy"]
    mounts = [v.split(":") for v in toxiproxy["volumes"]]
    target = next(dst for src, dst, *_ in mounts if (COMPOSE_FILE.parent / src).resolve() == PROXIES_FILE)
    assert next(m for m in mounts if m[1] == target)[2:] == ["ro"]
    assert f"-config={target}" in toxiproxy["command"]
    assert "-host=0.0.0.0" in toxiproxy["command"]
    assert container_listeners("toxiproxy") == {DEFAULT_PORTS[p] for p in ("toxiproxy", *(h.listen for h in HOPS))}
    # Healthy only once the proxies exist: the file's proxies are made in order, the last one last.
    assert toxiproxy["healthcheck"]["test"] == ["CMD", "http-ok", "8474", f"/proxies/{HOP_NAMES[-1]}"]


def test_hop_urls_are_the_proxies_inside_the_network(tmp_path):
    for offset in (0, 100):  # container ports do not move with the offset
        ctx = LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", port_offset=offset)
        backend = ComposeBackend(ctx)
        for proxy in compose_proxies():
            port = proxy["listen"].rpartition(":")[2]
            assert backend.hop_address(proxy["name"]) == f"toxiproxy:{port}"
            assert backend.hop_url(proxy["name"]) == f"http://toxiproxy:{port}"
    assert backend.hop_url("action-store") == "http://toxiproxy:8484"
    with pytest.raises(LabConfigError, match="Valid hops"):
        backend.hop_url("store-nowhere")


def test_actions_join_the_network_the_hops_live_on():
    """deploy_action binds hop_url("action-store"): the action's containers must resolve ``toxiproxy``."""
    assert COMPOSE["networks"]["default"]["name"] == NETWORK
    assert re.search(rf'^\s*network\s*=\s*"{re.escape(NETWORK)}"\s*$', OPENWHISK_CONF.read_text(), re.M)
    assert "networks" not in SERVICES["toxiproxy"]  # on the default network, under its service name


# -- Node-RED's environment ------------------------------------------------------
def test_nodered_gets_every_variable_the_flow_reads():
    wanted = flow_variables()
    # The parser must find the flow's reads of every kind, or this test proves nothing.
    assert {"LABKIT_KAFKA_BOOTSTRAP", "LABKIT_S3_URL", "LABKIT_FAAS_URL", "LABKIT_WEBHOOK_TOKEN",
            "LABKIT_METRICS_FILE", "LABKIT_SMTP_HOST"} <= wanted
    env = SERVICES["nodered"]["environment"]
    assert not wanted - set(env), f"nodered lacks {sorted(wanted - set(env))}"
    assert all(str(env[name]).strip() for name in wanted)


def test_nodered_gets_what_the_native_backend_gives_it(tmp_path):
    ctx = LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    native = NodeRed(ctx).environment()
    env = SERVICES["nodered"]["environment"]
    assert not set(native) - set(env), f"nodered lacks {sorted(set(native) - set(env))}"
    backend = ComposeBackend(ctx)
    # Uploads and invocations go through their hops; Kafka, storage-out and mail directly, as natively.
    assert env["LABKIT_S3_URL"] == backend.hop_url("client-store")
    assert env["LABKIT_FAAS_URL"] == backend.hop_url("nodered-faas")
    assert env["LABKIT_KAFKA_BOOTSTRAP"] == NETWORK_ENDPOINTS["kafka"]
    assert env["LABKIT_S3_OUT_URL"] == NETWORK_ENDPOINTS["storage-out"]
    assert f"{env['LABKIT_SMTP_HOST']}:{env['LABKIT_SMTP_PORT']}" == NETWORK_ENDPOINTS["mail"]
    assert env["LABKIT_NODERED_MAX_BODY_BYTES"] == native["LABKIT_NODERED_MAX_BODY_BYTES"] == str(MAX_BODY_BYTES)
    assert env["LABKIT_NODERED_HOST"] == "0.0.0.0"
    workdir = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M)[-1]
    assert env["NODE_PATH"] == f"{workdir}/node_modules"
    # Secrets: the same secret as natively, from the env file, with no default.
    secret_of_value = {value: field for field, value in ctx.secrets.as_plain_dict().items() if value}
    for name, value in native.items():
        if value in secret_of_value:
            var = required_ref(str(env[name]))
            assert var and SECRET_FIELDS.get(var) == secret_of_value[value], f"{name} must be ${{VAR:?message}}"


def test_nodered_writes_metrics_where_labkit_reads_them(tmp_path):
    env = SERVICES["nodered"]["environment"]
    assert env["LABKIT_METRICS_FILE"] == f"{METRICS_MOUNT}/{METRICS_FILE.name}"
    binds = [v for v in SERVICES["nodered"]["volumes"] if isinstance(v, dict) and v.get("type") == "bind"]
    assert [(required_ref(v["source"]), v["target"]) for v in binds] == [(METRICS_DIR_VAR, METRICS_MOUNT)]
    backend = backend_at(tmp_path)
    host_dir = Path(backend.compose_env()[METRICS_DIR_VAR])
    assert host_dir.is_absolute()
    assert host_dir / METRICS_FILE.name == metrics_path(SimpleNamespace(ctx=backend.ctx)).absolute()


@pytest.mark.parametrize("service", sorted(LABKIT_IMAGES))
def test_the_lab_runs_labkits_images_tagged_with_the_pins(service):
    spec = {s.name: s for s in image_specs()}[LABKIT_IMAGES[service]]
    assert SERVICES[service]["image"] == spec.tag
    assert SERVICES[service]["pull_policy"] == "never" and "build" not in SERVICES[service]
    repository, _, tag = spec.tag.rpartition(":")
    assert repository == f"{pins()['compose_images']['prefix']}/{spec.name}"
    key = PIN_KEYS.get(service)
    if key:
        assert tag == pins()[key]["version"]
    else:  # labkit's own runner
        from labkit import __version__

        assert service == "faas" and tag == __version__


@pytest.mark.parametrize("service", sorted(PROFILE_SERVICES))
def test_profile_images_are_their_upstream_pins(service):
    entry = pins()[service.replace("-", "_")]
    repository, _, tag = SERVICES[service]["image"].rpartition(":")
    assert repository == entry["image"]
    assert tag.removeprefix("v") == entry["version"].removeprefix("v")


@pytest.mark.parametrize("spec", image_specs(), ids=lambda s: s.name)
def test_each_image_is_its_base_one_copy_and_at_most_one_run(spec):
    """vfs stores every layer as a whole copy: a lean image has few."""
    text = (IMAGES_DIR / spec.name / "Dockerfile").read_text()
    instructions = re.findall(r"^([A-Z]+)\s+(.*)$", text, re.M)
    assert [arg for op, arg in instructions if op == "FROM"] == [pins()["compose_images"]["base"]]
    assert [arg for op, arg in instructions if op == "COPY"] == ["rootfs/ /"]
    assert len([op for op, _ in instructions if op in ("RUN", "ADD")]) <= 1
    assert {d.name for d in IMAGES_DIR.iterdir() if d.is_dir()} == {s.name for s in image_specs()}


def test_the_remote_nodered_image_is_built_from_the_pinned_image():
    """stack/nodered/Dockerfile: Node-RED for a deployment of one's own (docs/scaling.md), not compose's."""
    text = (STACK_DIR / "nodered" / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == [f"{pins()['nodered']['image']}:{pins()['nodered']['version']}-20"]
    for source in ("package.json package-lock.json", "nodes", "settings.js"):
        assert re.search(rf"^COPY\b.*\b{re.escape(source)}\s", text, re.M), f"Dockerfile does not copy {source}"
    assert re.search(r"^RUN npm ci --omit=dev\b", text, re.M)


def test_the_runner_image_holds_every_part_of_labkit_the_runner_imports():
    from labkit.stack.images import RUNNER_PARTS

    code = ("import sys, labkit.faas.__main__, labkit.faas.app, labkit.faas.worker, labkit.faas.launcher; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('labkit.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    parts = {m.split(".")[1] for m in loaded}
    assert parts <= {p.removesuffix(".py") for p in RUNNER_PARTS}, sorted(parts)


def test_openwhisk_profile_is_standalone_with_the_docker_socket():
    ow = SERVICES["openwhisk"]
    assert ow["image"].startswith("openwhisk/standalone:")
    assert "/var/run/docker.sock:/var/run/docker.sock" in ow["volumes"]
    assert any(v.startswith("./openwhisk/openwhisk.conf:") for v in ow["volumes"])
    assert (STACK_DIR / "openwhisk" / "openwhisk.conf").is_file()
    assert [with_defaults(p).split(":")[2] for p in ow["ports"]] == ["3233"]


def test_faas_is_labkits_runner_with_its_key_from_the_environment():
    faas = SERVICES["faas"]
    assert faas["command"][:4] == ["--host", "0.0.0.0", "--port", "3233"]
    assert required_ref(faas["environment"]["LABKIT_FAAS_AUTH"]) == "LABKIT_FAAS_AUTH"
    assert not any("AUTH" in str(arg) for arg in faas["command"])
    assert [with_defaults(p).split(":")[2] for p in faas["ports"]] == ["3233"]
    assert "labkit.faas" in (IMAGES_DIR / "faas" / "Dockerfile").read_text()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck(service):
    check = SERVICES[service].get("healthcheck") or {}
    assert check.get("test") and check["test"] != ["NONE"] and not check.get("disable")


def test_secrets_are_required_and_have_no_default():
    for var in SECRET_VARS:
        uses = [m for m in VARIABLES if m["name"] == var]
        assert uses, f"{var} is not used"
        assert all(m["op"] == ":?" and m["arg"].strip() for m in uses), f"{var} must be ${{{var}:?message}}"
    defaulted = {m["name"] for m in VARIABLES if m["op"] in (":-", "-")}
    assert all(name.startswith("LABKIT_PORT_") for name in defaulted), defaulted


def test_depends_on_mirrors_the_native_start_order():
    # The gateways' events go through their hops' proxies: toxiproxy first.
    assert set(Storage.after) == {"kafka", "toxiproxy"} and set(StorageOut.after) == {"nodered", "toxiproxy"}
    for t in SERVICE_TYPES:
        depends = SERVICES[t.name].get("depends_on", {})
        assert set(depends) == set(getattr(t, "after", ())), t.name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), t.name


def test_data_lives_in_named_volumes_shared_by_both_gateways():
    declared = set(COMPOSE["volumes"])
    named = {s: [v.split(":")[0] for v in SERVICES[s].get("volumes", [])
                 if isinstance(v, str) and not v.startswith(("/", "."))] for s in SERVICES}
    assert all(v.get("type") in ("bind", "volume") for s in SERVICES for v in SERVICES[s].get("volumes", [])
               if isinstance(v, dict))
    assert named["storage"] == named["storage-out"] == ["s3-data", "s3-iam"]
    for service in ("storage", "kafka", "nodered", "mail", "faas"):
        assert named[service] and set(named[service]) <= declared, service


def test_compose_file_is_valid_with_an_env_file(tmp_path):
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in dummy_env().items()))
    if compose_usable():
        base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "labkit"]
        ok = subprocess.run([*base, "--env-file", str(env_file), "config", "-q"], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        empty = tmp_path / "empty.env"
        empty.write_text("")
        refused = subprocess.run([*base, "--env-file", str(empty), "config", "-q"], capture_output=True, text=True)
        assert refused.returncode != 0 and "required variable" in refused.stderr
    else:  # no compose plugin here: the same checks, with this module's interpolation
        rendered = render(COMPOSE, dummy_env())
        assert "${" not in json.dumps(rendered)
        assert rendered["services"]["storage"]["environment"]["ROOT_ACCESS_KEY"] == dummy_env()["ROOT_ACCESS_KEY"]
        with pytest.raises(KeyError, match="required variable"):
            render(COMPOSE, {})
        for var in REQUIRED_VARS:  # each one alone is enough to refuse
            with pytest.raises(KeyError, match=f"required variable {var} "):
                render(COMPOSE, {k: v for k, v in dummy_env().items() if k != var})


def test_env_example_lists_what_labkit_writes_with_empty_secrets(tmp_path):
    lines = [ln for ln in ENV_EXAMPLE.read_text().splitlines() if ln and not ln.startswith("#")]
    example = dict(ln.split("=", 1) for ln in lines)
    written = list(backend_at(tmp_path).compose_env())
    # The same variables; the ports may come in any order (labkit writes them in start order).
    assert sorted(example) == sorted(written)
    assert [v for v in example if not v.startswith("LABKIT_PORT_")] == [v for v in written
                                                                        if not v.startswith("LABKIT_PORT_")]
    assert all(example[var] == "" for var in SECRET_VARS)
    assert example[METRICS_DIR_VAR] == ""  # a path of the user's machine
    assert all(int(example[port_var(p)]) == expected for p, expected in DEFAULT_PORTS.items()
               if p not in UNPUBLISHED_PORTS)


# -- ComposeBackend, with a fake docker ----------------------------------------
FAKE_DOCKER = """#!{python}
import json, os, sys
state = os.environ["FAKE_DOCKER_DIR"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"argv": args, "password": os.environ.get("LABKIT_NODERED_PASSWORD")}}) + "\\n")
def answer(name, default=""):
    path = os.path.join(state, name)
    return open(path).read() if os.path.exists(path) else default
if answer("mode") == "broken":
    sys.stderr.write("docker: 'compose' is not a docker command.\\n")
    sys.exit(1)
if args[:2] == ["compose", "version"]:
    print("Docker Compose version v2.32.4")
elif args[:1] == ["version"]:
    print(answer("min_api", "1.24"))
elif args[:1] == ["compose"] and "ps" in args:
    print(answer("ps.jsonl"))
elif args[:1] == ["compose"] and "logs" in args:
    print(answer("logs.txt"))
"""

PS_ROWS = [
    {"Service": "storage", "State": "running", "Health": "healthy"},
    {"Service": "kafka", "State": "running", "Health": "starting"},
    {"Service": "nodered", "State": "paused", "Health": "healthy"},
    {"Service": "mail", "State": "exited", "Health": ""},
    {"Service": "kafka-ui", "State": "running", "Health": "healthy"},
]


def backend_at(tmp_path: Path) -> ComposeBackend:
    return ComposeBackend(LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"))


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> Path:
    """A ``docker`` on an otherwise empty PATH; its calls land in ``calls.jsonl``."""
    bin_dir, state = tmp_path / "bin", tmp_path / "docker-state"
    bin_dir.mkdir()
    state.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    (state / "ps.jsonl").write_text("\n".join(json.dumps(r) for r in PS_ROWS))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_DOCKER_DIR", str(state))
    return state


def calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def compose_calls(state: Path) -> list[list[str]]:
    return [c["argv"] for c in calls(state) if c["argv"][:1] == ["compose"] and c["argv"][1] != "version"]


def secret_values(backend: ComposeBackend) -> list[str]:
    env = backend.compose_env()
    return [env[var] for var in SECRET_VARS if var != "LABKIT_NODERED_USER"]


def test_up_without_docker_on_path_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(LabConfigError, match=re.escape(FIX)):
        backend_at(tmp_path).up()


def test_up_with_a_broken_compose_plugin_names_the_fix(tmp_path, fake_docker):
    (fake_docker / "mode").write_text("broken")
    with pytest.raises(LabConfigError, match=re.escape(FIX)) as raised:
        backend_at(tmp_path).up()
    assert "docker compose version" in str(raised.value)


def test_up_refuses_an_engine_the_openwhisk_image_cannot_drive(tmp_path, fake_docker):
    (fake_docker / "min_api").write_text("1.44")
    with pytest.raises(LabConfigError, match="min-api-version"):
        backend_at(tmp_path).up()


def test_env_file_is_private_and_holds_the_secrets_the_compose_file_lacks(tmp_path):
    backend = backend_at(tmp_path)
    backend.env_file.parent.mkdir(parents=True)
    backend.env_file.write_text("stale\n")
    backend.env_file.chmod(0o644)
    path = backend.write_env_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for var, value in backend.compose_env().items():
        assert f"{var}='{value}'\n" in text
    stack_text = COMPOSE_TEXT + OPENWHISK_CONF.read_text() + ENV_EXAMPLE.read_text() + PROXIES_FILE.read_text()
    assert not [v for v in secret_values(backend) if v in stack_text]


def test_env_file_holds_every_variable_the_compose_file_reads(tmp_path):
    env = backend_at(tmp_path).compose_env()
    read = {m["name"] for m in VARIABLES}
    assert not read - set(env), f"compose.yaml reads {sorted(read - set(env))}, which labkit does not write"
    assert set(SECRET_VARS) | {METRICS_DIR_VAR} <= set(REQUIRED_VARS)
    assert all(env[var] for var in REQUIRED_VARS)


def test_no_variable_of_the_env_file_leaks_in_from_the_callers_environment(tmp_path, monkeypatch):
    backend = backend_at(tmp_path)
    for var in backend.compose_env():
        monkeypatch.setenv(var, "from-the-shell")  # compose would let it win over the env file
    assert not set(backend.compose_env()) & set(backend._child_env())


def test_up_drives_compose_with_the_env_file_and_no_secret_in_any_argv(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("LABKIT_NODERED_PASSWORD", "from-the-shell")  # compose would let it win
    built = []
    monkeypatch.setattr("labkit.stack.backends.compose.ensure_images", lambda ctx, reporter: built.append(ctx))
    backend = backend_at(tmp_path)
    rows = backend.up()
    base = ["compose", "-f", str(COMPOSE_FILE), "-p", "labkit", "--env-file", str(backend.env_file)]
    ups = [argv for argv in compose_calls(fake_docker) if "up" in argv]
    assert ups and ups[0][:len(base)] == base and {"--detach", "--wait"} <= set(ups[0])
    assert built == [backend.ctx]  # the images, before compose runs (labkit.stack.docker.ensure_images)
    everything = json.dumps(calls(fake_docker))
    assert not [v for v in secret_values(backend) if v in everything]
    assert {c["password"] for c in calls(fake_docker) if "--env-file" in c["argv"]} == {None}
    assert [r.name for r in rows] == list(SERVICE_NAMES)
    assert backend.metrics_dir.is_dir()  # made by labkit, so not root's


def test_up_with_wipe_removes_the_volumes_first(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setattr("labkit.stack.backends.compose.ensure_images", lambda ctx, reporter: [])
    backend_at(tmp_path).up(wipe=True)
    verbs = [argv[7] for argv in compose_calls(fake_docker)]
    assert verbs[:2] == ["down", "up"]
    assert "--volumes" in compose_calls(fake_docker)[0]


def test_status_maps_compose_ps_rows(tmp_path, fake_docker):
    rows = {r.name: r for r in backend_at(tmp_path).status()}
    assert set(rows) == set(SERVICE_NAMES)
    assert (rows["storage"].state, rows["storage"].healthy) == ("up", True)
    assert (rows["kafka"].state, rows["kafka"].healthy) == ("unhealthy", False)
    assert rows["nodered"].state == "paused"
    assert rows["mail"].state == rows["faas"].state == "down"
    assert rows["mail"].ports == {"mail-smtp": 1025, "mail-http": 8025}
    from labkit import __version__

    assert rows["faas"].version == f"labkit-{__version__}"  # labkit's runner, not a pin


@pytest.mark.parametrize(("verb", "compose_verb"), [
    ("stop", "stop"), ("kill", "kill"), ("pause", "pause"), ("resume", "unpause"), ("start", "up"),
])
def test_service_verbs_are_compose_verbs(tmp_path, fake_docker, verb, compose_verb):
    getattr(backend_at(tmp_path), verb)("kafka")
    argv = compose_calls(fake_docker)[-1]
    assert argv[7] == compose_verb and argv[-1] == "kafka"


def test_restart_restarts_then_waits_until_healthy(tmp_path, fake_docker):
    backend_at(tmp_path).restart("nodered")
    assert [argv[7] for argv in compose_calls(fake_docker)] == ["restart", "up"]
    assert "--wait" in compose_calls(fake_docker)[-1]


def test_service_names_are_checked_before_docker_runs(tmp_path, fake_docker):
    with pytest.raises(LabConfigError, match="Valid services"):
        backend_at(tmp_path).kill("kafka-ui")
    assert not (fake_docker / "calls.jsonl").exists()


def test_logs_are_scrubbed_of_secrets(tmp_path, fake_docker):
    backend = backend_at(tmp_path)
    leaked = secret_values(backend)[0]
    (fake_docker / "logs.txt").write_text(f"starting with key {leaked}\n")
    out = backend.logs("storage", lines=5)
    assert leaked not in out and "***" in out
    assert compose_calls(fake_docker)[-1][-3:] == ["--tail", "5", "storage"]


def test_endpoints_are_the_native_ones(tmp_path):
    ctx = LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", port_offset=100)
    assert ComposeBackend(ctx).endpoints() == NativeBackend(ctx).endpoints()
    assert set(ComposeBackend(ctx).network_endpoints()) == set(SERVICE_NAMES)


def test_port_offset_moves_every_published_port(tmp_path):
    ctx = LabContext.from_env(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", port_offset=100)
    env = ComposeBackend(ctx).compose_env()
    assert env[port_var("storage")] == "7170" and env[port_var("kafka-ui")] == "8180"
    assert env[port_var("openwhisk")] == "3334"
    assert os.path.basename(str(ComposeBackend(ctx).env_file)) == "compose.env"


def test_kafka_is_healthy_only_once_the_pipeline_topics_exist():
    from labkit.stack.services.kafka import TOPICS

    # kafka-start creates LABKIT_KAFKA_TOPICS once the broker answers, then marks it; the check
    # wants the mark and the port.
    assert SERVICES["kafka"]["environment"]["LABKIT_KAFKA_TOPICS"].split() == list(TOPICS)
    check = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    start = (IMAGES_DIR / "kafka" / "kafka-start").read_text()
    marker = re.search(r"ready=(\S+)", start)[1]
    assert f"test -e {marker}" in check and "/dev/tcp/127.0.0.1/19092" in check
    assert re.search(r'CreateTopics localhost:19092 \$\{LABKIT_KAFKA_TOPICS', start)
    assert start.index('rm -f "$ready"') < start.index('touch "$ready"')
