"""The retry policy is declared once (labkit.pipeline.retry); the specs, the deploy and the flow agree with it."""

import json

import pytest

from labkit.errors import LabConfigError
from labkit.pipeline.deploy import FLOWS_FILE, pipeline_flows
from labkit.pipeline.retry import HOP_NODES, RETRY_PRESETS, SUBFLOW_ENV, RetryHops, RetryPolicy


def test_a_bad_policy_is_one_line_naming_the_field() -> None:
    with pytest.raises(LabConfigError) as caught:
        RetryPolicy.of({"policy": "sometimes"})
    assert "policy" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(LabConfigError, match="max_attempts"):
        RetryPolicy.of({"max_attempts": 0})
    with pytest.raises(LabConfigError, match="presets: none, fixed, exponential"):
        RetryPolicy.of("sometimes")
    assert RetryPolicy.of("fixed") == RETRY_PRESETS["fixed"]


@pytest.mark.parametrize(("value", "upload", "invoke"), [
    ("fixed", RETRY_PRESETS["fixed"], RETRY_PRESETS["fixed"]),
    (RetryPolicy(policy="none", max_attempts=1), RETRY_PRESETS["none"], RETRY_PRESETS["none"]),
    ({"policy": "fixed", "base_ms": 50}, RetryPolicy(policy="fixed", base_ms=50), RetryPolicy(policy="fixed", base_ms=50)),
    ({"upload": "none"}, RETRY_PRESETS["none"], RetryPolicy()),
])
def test_every_way_of_writing_a_setting_gives_per_hop_policies(value, upload, invoke) -> None:
    hops = RetryHops.of(value)
    assert (hops.upload, hops.invoke) == (upload, invoke)


def test_an_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(LabConfigError, match="presets: none, fixed, exponential"):
        RetryHops.of("sometimes")


def test_each_hop_reads_its_own_tab_env_in_the_deployed_flow() -> None:
    hops = RetryHops.of({"upload": "none", "invoke": "fixed"})
    flows = pipeline_flows(hops.tab_env())
    tab_env = {e["name"]: e["value"] for e in next(n for n in flows if n["type"] == "tab")["env"]}
    for hop, node_id in HOP_NODES.items():
        node = next(n for n in flows if n["id"] == node_id)
        policy = getattr(hops, hop)
        read = {e["name"]: tab_env[e["value"]] for e in node["env"]}
        assert read == {name: str(getattr(policy, field)) for name, field in SUBFLOW_ENV.items()}


def test_the_flow_file_declares_no_policy_of_its_own() -> None:
    """The retry subflow's defaults and the instances' bindings are what labkit would deploy."""
    flows = json.loads(FLOWS_FILE.read_text())
    subflow = next(n for n in flows if n["type"] == "subflow" and {e["name"] for e in n.get("env", [])} >= set(SUBFLOW_ENV))
    defaults = {e["name"]: e["value"] for e in subflow["env"]}
    assert defaults == {name: str(getattr(RetryPolicy(), field)) for name, field in SUBFLOW_ENV.items()}
    for hop, node_id in HOP_NODES.items():
        node = next(n for n in flows if n["id"] == node_id)
        assert [e["value"] for e in node["env"]] == [f"{hop.upper()}_RETRY_{name}" for name in SUBFLOW_ENV]
