"""The JupyterHub image and the Zero to JupyterHub config, checked as files (nothing is built or
deployed): they parse, their pins are stack/versions.toml's, the per-student resources follow
from the measured footprint (docs/performance.md), students are kept apart, and neither file
holds a secret. docs/jupyterhub.md says what is not tested."""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from labkit.stack.config import LabConfig
from labkit.stack.versions import pins

ROOT = Path(__file__).resolve().parents[1]
HUB_DIR = ROOT / "stack" / "jupyterhub"
DOCKERFILE = HUB_DIR / "Dockerfile"
VALUES_FILE = HUB_DIR / "z2jh-values.yaml"
DOC = ROOT / "docs" / "jupyterhub.md"
PERFORMANCE = ROOT / "docs" / "performance.md"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VALUES = yaml.safe_load(VALUES_FILE.read_text())
SINGLEUSER = VALUES["singleuser"]

# What docs/performance.md does not hold, measured for docs/jupyterhub.md (MB of RSS).
JUPYTER_SERVER_MB = 131  # `jupyter lab` with JupyterLab and jupyter-server-proxy, after serving /lab
KERNEL_MB = 240  # a kernel with the notebooks' imports, a plot and a 300,000-row frame
CPU_MS_PER_IMAGE = 46  # the whole pipeline at saturation (docs/performance.md, per-process table)
FASTEST_NOTEBOOK_RATE = 6.0  # images/s, notebook 06's open loop
# The ceiling's parts beyond the measured lab: heap caps (labkit/stack/services/kafka.py -Xmx512m,
# nodered.py --max-old-space-size=512) plus what each process holds beyond its heap, a kernel with
# more data, the benchmark's bare loop (one process per core).
HEAP_CAP_MB, BEYOND_HEAP_MB, BIG_KERNEL_MB, BARE_LOOP_MB, CORES = 512, 150, 500, 100, 2
HOME = "/home/jovyan"  # z2jh's singleuser.storage.homeMountPath: the student's volume covers it


# -- helpers -----------------------------------------------------------------------
def parsed() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE), cache_content=True)


def instructions(kind: str | None = None) -> list[dict]:
    return [i for i in parsed().structure if kind is None or i["instruction"] == kind]


def stages() -> list[list[dict]]:
    """The instructions of each stage, FROM first."""
    out: list[list[dict]] = []
    for i in parsed().structure:
        if i["instruction"] == "FROM":
            out.append([])
        if out and i["instruction"] != "COMMENT":
            out[-1].append(i)
    return out


def stage_env(stage: int = 0) -> dict[str, str]:
    """The ENV a stage sets (dockerfile-parse's ``envs`` are the last stage's, which inherits them)."""
    env: dict[str, str] = {}
    for i in stages()[stage]:
        if i["instruction"] == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(i["value"]))
    return env


def arg_defaults() -> dict[str, str]:
    """Every ARG's default, wherever it is declared."""
    return dict(i["value"].split("=", 1) for i in instructions("ARG") if "=" in i["value"])


def bytes_of(quantity: str | float) -> int:
    """A memory quantity as KubeSpawner reads it (jupyterhub.traitlets.ByteSpecification)."""
    if isinstance(quantity, (int, float)):
        return int(quantity)
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    assert quantity[-1] in units, f"{quantity}: KubeSpawner takes K, M, G or T (not Gi)"
    return int(float(quantity[:-1]) * units[quantity[-1]])


def idle_footprint() -> dict[str, list[float]]:
    """docs/performance.md's idle table: service -> [fresh RSS MB, CPU %, after-bench RSS MB, CPU %]."""
    text = PERFORMANCE.read_text()
    section = re.search(r"^### Idle footprint of a lab\n(.*?)(?=^#)", text, re.M | re.S)
    assert section, "docs/performance.md has no section '### Idle footprint of a lab'"
    rows = {}
    for line in section[1].splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and all(re.fullmatch(r"[\d.]+", c) for c in cells[1:]):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    assert {"all", "Kafka", "Node-RED"} <= set(rows), f"idle table rows: {sorted(rows)}"
    return rows


SECRET_KEY = re.compile(r"secret|token|passw|api.?key|access.?key|private.?key|credential", re.I)
SECRET_TEXT = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32,}(?![0-9a-fA-F])"),  # hex tokens (cookie secrets, API tokens)
    re.compile(r"(?<![\w/+.-])[A-Za-z0-9+/_-]{40,}={0,2}(?![\w/+.-])"),  # base64-ish blobs
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # cloud access key ids
    re.compile(r"(?i)\b(?:secret|token|password|passwd|api[_-]?key)\w*\s*[:=]\s*['\"]?[^\s'\"#]{8,}"),
]


def secret_looking(text: str) -> list[str]:
    """What in ``text`` looks like a credential (a long blob only with digits and both cases, so paths pass)."""
    found = [m.group(0) for pattern in SECRET_TEXT for m in pattern.finditer(text)]
    return [f for f in found if not re.fullmatch(r"[A-Za-z0-9+/_=-]{40,}", f) or
            (re.search(r"\d", f) and re.search(r"[a-z]", f) and re.search(r"[A-Z]", f))]


def secret_keys(node: object, path: str = "") -> list[str]:
    """YAML keys whose name says they hold a credential."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in
                ([f"{path}.{k}"] if SECRET_KEY.search(str(k)) else []) + secret_keys(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in secret_keys(v, f"{path}[{i}]")]
    return []


# -- the Dockerfile ------------------------------------------------------------------
def test_dockerfile_parses_into_the_lab_release_and_final_stages():
    known = {"ARG", "FROM", "SHELL", "USER", "RUN", "ENV", "COPY", "WORKDIR", "COMMENT"}
    assert {i["instruction"] for i in instructions()} <= known
    froms = [i["value"] for i in instructions("FROM")]
    assert froms == ["${BASE_IMAGE}:${BASE_TAG} AS lab", "lab AS release", "lab"]
    assert parsed().parent_images == [f"{pins()['jupyterhub']['image']}:{pins()['jupyterhub']['version']}",
                                      "lab", "lab"]


def test_base_image_is_the_pinned_docker_stacks_image():
    hub = pins()["jupyterhub"]
    assert hub["image"] == "quay.io/jupyter/base-notebook"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", hub["version"]), "pin a date tag: latest and python-* move"
    defaults = arg_defaults()
    assert (defaults["BASE_IMAGE"], defaults["BASE_TAG"]) == (hub["image"], hub["version"])


def test_toolchain_args_are_the_pins_and_what_environment_yml_asks_for():
    tools, defaults = pins()["toolchains"], arg_defaults()
    assert (defaults["GO_VERSION"], defaults["JAVA_VERSION"], defaults["NODE_VERSION"]) == \
           (tools["go"], tools["java"], tools["node"])
    mamba = next(i["value"] for i in instructions("RUN") if "mamba create" in i["value"])
    for spec in ('"go=${GO_VERSION}"', '"openjdk=${JAVA_VERSION}"', '"nodejs=${NODE_VERSION}"', " maven "):
        assert spec in mamba, spec
    assert "--channel conda-forge" in mamba
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs = dict((re.split(r"=+", d, maxsplit=1) + [""])[:2] for d in env["dependencies"] if isinstance(d, str))
    assert specs["openjdk"] == tools["java"] and specs["nodejs"] == tools["node"]
    assert specs["go"] in ("", tools["go"])  # environment.yml takes conda-forge's newest Go


def test_image_installs_the_debian_packages_make_lab_needs_and_not_chromium():
    makefile = (ROOT / "Makefile").read_text()
    debs = re.search(r"^DEBS := (.+)$", makefile, re.M)[1].split()
    test_debs = re.search(r"^TEST_DEBS := (.+)$", makefile, re.M)[1].split()
    apt = " ".join(i["value"] for i in instructions("RUN") if "apt-get install" in i["value"])
    assert debs and all(re.search(rf"\s{re.escape(d)}(\s|$)", apt) for d in debs), debs
    assert not any(d in " ".join(i["value"] for i in instructions("RUN")) for d in test_debs), test_debs


def test_services_are_built_into_the_image_as_the_notebook_user_outside_the_home():
    lab = stages()[0]
    user, steps = "root", {}
    for i in lab:
        if i["instruction"] == "USER":
            user = i["value"]
        elif i["instruction"] == "RUN":
            for step in ("pip install", "labkit install", "labkit action zip", "mamba create"):
                if step in i["value"]:
                    steps[step] = user
    assert steps == dict.fromkeys(("mamba create", "pip install", "labkit install", "labkit action zip"), "${NB_UID}")
    pip = next(i["value"] for i in lab if "pip install" in i["value"])
    assert "pip install --no-cache-dir -e /opt/labkit/lab" in pip  # labkit reads stack/ beside its package
    env = stage_env()
    assert env["LABKIT_CACHE_DIR"] == "/opt/labkit/cache" and not env["LABKIT_CACHE_DIR"].startswith(HOME)
    assert env["GOTOOLCHAIN"] == "local"
    assert "/opt/labkit/toolchains/bin" in env["PATH"]


def test_listeners_stay_on_loopback_and_no_port_is_exposed():
    assert stage_env()["LABKIT_HOST"] == "127.0.0.1"
    assert not instructions("EXPOSE")
    assert LabConfig(host=stage_env()["LABKIT_HOST"]).host == "127.0.0.1"


def test_copies_only_what_labkit_reads_and_ships_no_instructor_notebook():
    lab, release, final = stages()
    sources = [i["value"].split() for i in lab if i["instruction"] == "COPY"]
    copied = {word for words in sources for word in words[1:-1] if not word.startswith("--")}
    assert copied == {"pyproject.toml", "README.md", "labkit", "stack"}
    assert all((ROOT / path).exists() for path in copied)
    release_copies = [i["value"] for i in release if i["instruction"] == "COPY"]
    assert release_copies == ["--chown=${NB_UID}:${NB_GID} notebooks /opt/labkit/lab/notebooks"]
    assert any("labkit course release --out /tmp/course" in i["value"] for i in release if i["instruction"] == "RUN")
    final_copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert final_copies == ["--from=release --chown=${NB_UID}:${NB_GID} /tmp/course/student /opt/labkit/lab/notebooks"]


def test_the_build_refuses_lab_state_and_keeps_no_data_dir():
    guard = next(i["value"] for i in instructions("RUN") if "secrets.json" in i["value"] and "find" in i["value"])
    for name in ("secrets.json", "compose.env", ".env", "'*.pem'", "users.json"):
        assert f"-name {name}" in guard, name
    install = next(i["value"] for i in instructions("RUN") if "labkit install" in i["value"])
    assert "LABKIT_DATA_DIR=/tmp/labkit-build" in install and "rm -rf /tmp/resize.zip /tmp/labkit-build" in install
    assert "test ! -e /tmp/labkit-build/secrets.json" in install


def test_the_documented_tag_is_the_values_tag():
    tag = f"{PROJECT['version']}-{pins()['jupyterhub']['version']}"
    assert SINGLEUSER["image"]["tag"] == tag
    assert f"dit247-lab:{tag} ." in DOCKERFILE.read_text()
    assert f"{SINGLEUSER['image']['name']}:{tag}" in DOC.read_text()


# -- the Zero to JupyterHub values ----------------------------------------------------
def test_values_are_for_the_pinned_chart():
    chart = pins()["jupyterhub"]["chart"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart)
    for text in (VALUES_FILE.read_text(), DOC.read_text()):
        assert f"--version {chart} " in text
    assert f"chart {chart}" in VALUES_FILE.read_text()


def test_values_open_jupyterlab_and_copy_the_student_release_home():
    assert SINGLEUSER["defaultUrl"] == "/lab"
    assert SINGLEUSER["image"]["name"] and SINGLEUSER["image"]["pullPolicy"] == "IfNotPresent"
    hook = " ".join(SINGLEUSER["lifecycleHooks"]["postStart"]["exec"]["command"])
    assert "cp -r /opt/labkit/lab/notebooks" in hook and 'test -e "$HOME/dit247" ||' in hook


def test_values_cull_idle_servers():
    cull = VALUES["cull"]
    assert cull["enabled"] is True and cull["users"] is False and 0 < cull["timeout"] <= 4 * 3600


def test_extra_env_is_lab_settings_only_and_leaves_the_web_prefix_to_jupyterhub():
    env = SINGLEUSER["extraEnv"]
    fields = set(LabConfig.model_fields)
    assert all(k.startswith("LABKIT_") and k.removeprefix("LABKIT_").lower() in fields for k in env), env
    assert "LABKIT_WEB_PREFIX" not in env  # it defaults to JUPYTERHUB_SERVICE_PREFIX (labkit/stack/config.py)
    assert all(isinstance(v, str) for v in env.values())  # Kubernetes takes strings only
    assert LabConfig(ready_timeout_s=env["LABKIT_READY_TIMEOUT_S"]).ready_timeout_s > LabConfig.model_fields[
        "ready_timeout_s"].default


def test_students_are_kept_apart_by_the_network_policy():
    policy = SINGLEUSER["networkPolicy"]
    assert policy["enabled"] is True
    assert policy["ingress"] == [] and policy["allowedIngressPorts"] == []  # only the hub's proxy gets in
    assert policy["interNamespaceAccessLabels"] == "ignore"
    rules = policy["egressAllowRules"]
    assert rules["privateIPs"] is False  # no other pod of the cluster, so no other student
    assert rules["nonPrivateIPs"] is False and rules["cloudMetadataServer"] is False
    assert rules["dnsPortsKubeSystemNamespace"] is True
    assert policy["egress"] == []


def test_memory_follows_from_the_measured_footprint():
    rows = idle_footprint()
    lab_mb = max(rows["all"][0], rows["all"][2])
    working_mb = lab_mb + JUPYTER_SERVER_MB + KERNEL_MB
    guarantee, limit = bytes_of(SINGLEUSER["memory"]["guarantee"]), bytes_of(SINGLEUSER["memory"]["limit"])
    assert guarantee >= 1.2 * working_mb * 2**20, (guarantee / 2**20, working_mb)
    rest_mb = rows["all"][2] - rows["Kafka"][2] - rows["Node-RED"][2]
    ceiling_mb = (2 * (HEAP_CAP_MB + BEYOND_HEAP_MB) + rest_mb + JUPYTER_SERVER_MB + BIG_KERNEL_MB
                  + CORES * BARE_LOOP_MB)
    assert limit >= ceiling_mb * 2**20 > guarantee, (limit / 2**20, ceiling_mb)


def test_the_stated_memory_derivation_adds_up():
    text = VALUES_FILE.read_text()
    parts = [int(re.search(rf"{label}\s+(\d+) MB", text)[1]) for label in
             ("benchmark run \\(docs/performance.md\\)", "after /lab", "300k-row frame")]
    total = int(re.search(r"= (\d+) MB; x 1\.2 = (\d+) MB <= (\d+) MB", text)[1])
    assert parts == [886, JUPYTER_SERVER_MB, KERNEL_MB] and sum(parts) == total
    assert math.ceil(total * 1.2) <= bytes_of(SINGLEUSER["memory"]["guarantee"]) // 2**20
    stated_ceiling = int(re.search(r"= (\d+) MB <= 3072 MB", text)[1])
    assert stated_ceiling == 2 * 662 + 383 + 131 + 500 + 2 * 100
    assert bytes_of(SINGLEUSER["memory"]["limit"]) == 3072 * 2**20


def test_cpu_follows_from_the_measured_footprint():
    rows = idle_footprint()
    idle_cores = max(rows["all"][1], rows["all"][3]) / 100
    need = idle_cores + FASTEST_NOTEBOOK_RATE * CPU_MS_PER_IMAGE / 1000
    cpu = SINGLEUSER["cpu"]
    assert 1.5 * need <= cpu["guarantee"] < cpu["limit"], (need, cpu)
    assert cpu["limit"] == CORES  # what docs/performance.md measured on, and the Vagrant VM's CPUs


def test_the_class_sizing_example_follows_from_the_guarantees():
    text = DOC.read_text()
    cpu, mem = SINGLEUSER["cpu"]["guarantee"], bytes_of(SINGLEUSER["memory"]["guarantee"]) / 2**30
    per_node = min(math.floor(7.5 / cpu), math.floor(28 / mem))
    assert "7.5 cores and 28 GiB" in text and f"**{per_node} per\n  node**" in text
    assert f"ceil(30 / {per_node}) = **{math.ceil(30 / per_node)} nodes**" in text


# -- secrets ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", [DOCKERFILE, VALUES_FILE], ids=lambda p: p.name)
def test_no_secret_looking_value_in_the_files(path: Path):
    assert secret_looking(path.read_text()) == []


def test_no_yaml_key_holds_a_credential_and_no_dockerfile_variable_is_one():
    assert secret_keys(VALUES) == []
    names = [i["value"].split("=", 1)[0] for i in instructions("ARG")] + list(stage_env())
    assert not [n for n in names if SECRET_KEY.search(n)], names


def test_the_secret_detectors_catch_what_they_are_for():
    leaked = ("proxy:\n  secretToken: 97141abb55ea5321867979cb57bb2e6a86a2f4d6bb166fca45aedb07c212c42d\n"
              "ENV API_KEY=sk_live_abcdefgh12345678\n-----BEGIN RSA PRIVATE KEY-----\nAKIAABCDEFGHIJKLMNOP\n"
              "value: aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ1Z\n")
    found = secret_looking(leaked)
    assert any("97141abb" in f for f in found) and any("sk_live" in f for f in found)
    assert any("PRIVATE KEY" in f for f in found) and any(f.startswith("AKIA") for f in found)
    assert "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ1Z" in found
    assert secret_keys({"hub": {"config": {"GitHubOAuthenticator": {"client_secret": "x"}}}}) == [
        ".hub.config.GitHubOAuthenticator.client_secret"]
    assert secret_keys({"proxy": {"secretToken": "x"}}) == [".proxy.secretToken"]
    clean = ("FROM ${BASE_IMAGE}:${BASE_TAG} AS lab\nimage: quay.io/jupyter/base-notebook\n"
             "limit: 3G\n# the lab's credentials are generated at labkit up\n"
             "RUN rm -rf /opt/labkit/lab/stack/nodered/test/node_modules/and/a/long/path\n")
    assert secret_looking(clean) == [] and secret_keys(VALUES) == []
