"""The flow deploy's idempotence, without a stack: which deployed flows count as ours, unchanged."""

from __future__ import annotations

from labkit.pipeline import deploy as pipeline


def test_a_flow_already_deployed_with_these_settings_is_recognised() -> None:
    # stand_up skips the redeploy (and the consumer's rejoin) only when every node of ours is there unchanged
    ours = pipeline.pipeline_flows({"SLA_THRESHOLD_MS": 10000, "MAX_INFLIGHT": 8})
    others = [{"id": "other_tab", "type": "tab"}, {"id": "n1", "type": "inject", "z": "other_tab"}]
    deployed = others + [{k: v for k, v in n.items() if k != "credentials"} for n in ours]  # never returned
    assert pipeline._deployed(deployed, ours)
    assert not pipeline._deployed(deployed, pipeline.pipeline_flows({"SLA_THRESHOLD_MS": 5000, "MAX_INFLIGHT": 8}))
    assert not pipeline._deployed(others + ours[1:], ours)  # a node missing
    assert not pipeline._deployed(deployed + [{"id": "extra", "type": "debug", "z": pipeline.TAB_ID}], ours)
