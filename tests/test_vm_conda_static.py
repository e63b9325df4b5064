"""The Vagrant VM and the conda environment, checked as files (no VM, no conda needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from labkit.stack.backends.compose import KAFKA_UI_PORT, UNPUBLISHED_PORTS
from labkit.stack.config import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parent.parent
VAGRANTFILE = (ROOT / "Vagrantfile").read_text()
ENVIRONMENT = yaml.safe_load((ROOT / "environment.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lab_ports() -> dict[str, int]:
    """What the host reaches: every default port but Kafka's controller, plus the compose backend's Kafka UI."""
    ports = {name: port for name, port in DEFAULT_PORTS.items() if name not in UNPUBLISHED_PORTS}
    return {**ports, "kafka-ui": KAFKA_UI_PORT}


def vagrant_lab_ports() -> dict[str, int]:
    block = re.search(r"^LAB_PORTS = \{(.*?)^\}\.freeze", VAGRANTFILE, re.M | re.S)
    assert block, "Vagrantfile: LAB_PORTS = { ... }.freeze not found"
    return {name: int(port) for name, port in re.findall(r'"([\w-]+)"\s*=>\s*(\d+)', block[1])}


def conda_specs() -> dict[str, str]:
    """conda dependencies as name -> version pin ('' when unpinned)."""
    specs = [d for d in ENVIRONMENT["dependencies"] if isinstance(d, str)]
    return dict((re.split(r"[=<>]+", s, maxsplit=1) + [""])[:2] for s in specs)


# -- Vagrantfile -------------------------------------------------------------
def test_vagrant_box_is_ubuntu_24_04_with_2_cpus_and_6_gb():
    assert re.search(r'config\.vm\.box\s*=\s*"bento/ubuntu-24\.04"', VAGRANTFILE)
    assert re.search(r"\.cpus\s*=\s*2\b", VAGRANTFILE)
    assert re.search(r"\.memory\s*=\s*6144\b", VAGRANTFILE)


def test_vagrant_forwards_exactly_the_lab_ports_to_host_loopback():
    assert vagrant_lab_ports() == lab_ports()
    forwards = [ln for ln in VAGRANTFILE.splitlines() if '"forwarded_port"' in ln]
    assert forwards, "no forwarded_port"
    assert all('host_ip: "127.0.0.1"' in ln for ln in forwards)
    assert all(re.search(r"guest: port, host: port\b", ln) for ln in forwards)  # same number on both sides
    assert re.search(r"LAB_PORTS\.each do \|name, port\|\s*\n\s*config\.vm\.network \"forwarded_port\"", VAGRANTFILE)


def test_vagrant_syncs_the_repository_to_home_lab():
    assert re.search(r'config\.vm\.synced_folder "\.", "/home/vagrant/lab"\s*$', VAGRANTFILE, re.M)


def test_vagrant_installs_every_toolchain_and_docker():
    for package in ("python3-venv", "golang-go", "openjdk-17-jdk", "maven", "nodejs", "docker-ce",
                    "docker-compose-plugin"):
        assert re.search(rf"apt-get install\b[^\n]*(\\\n[^\n]*)*\b{re.escape(package)}\b", VAGRANTFILE), package
    assert "deb.nodesource.com/node_20.x" in VAGRANTFILE  # Node.js 20, not Ubuntu's 18
    assert "usermod -aG docker vagrant" in VAGRANTFILE


def test_vagrant_runs_make_setup_as_the_vagrant_user():
    lab_script = re.search(r"PROVISION_LAB = <<~'SHELL'\n(.*?)\nSHELL\n", VAGRANTFILE, re.S)
    assert lab_script and re.search(r"^\s*make setup\s*$", lab_script[1], re.M)
    assert re.search(r'provision "lab", type: "shell", privileged: false, inline: PROVISION_LAB', VAGRANTFILE)


def test_vagrantfile_is_valid_ruby_where_ruby_exists():
    if shutil.which("ruby") is None:
        assert VAGRANTFILE.count(" do |") == VAGRANTFILE.count("\n  end\n") + 1  # blocks closed: a rough check
        return
    checked = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# -- environment.yml -----------------------------------------------------------
def test_conda_environment_pins_the_toolchains():
    assert ENVIRONMENT["name"] == "dit247-lab"
    assert ENVIRONMENT["channels"] == ["conda-forge"]
    specs = conda_specs()
    assert specs["python"] == "3.11" and specs["openjdk"] == "17" and specs["nodejs"] == "20"
    assert {"go", "maven", "pip"} <= set(specs)


def test_conda_environment_installs_labkit_with_its_pyproject_dependencies():
    pip = next(d["pip"] for d in ENVIRONMENT["dependencies"] if isinstance(d, dict))
    assert "-e .[test]" in pip  # pyproject.toml's [project] dependencies, listed once
    project = PYPROJECT["project"]
    assert project["dependencies"] and "test" in project["optional-dependencies"]
    assert project["requires-python"] == ">=3.11"
