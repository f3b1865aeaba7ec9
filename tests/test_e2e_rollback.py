"""End to end: the daemon against the simulated cluster, a real Prometheus and the Slack/PagerDuty receivers.

Deploys are made with the real kubectl; what is asserted is what an SRE would see: the Deployment's
template and revision history, `kubectl describe` Events, the Slack messages and the PagerDuty incident.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo.stack import running_stack
from tests.e2ekit import (
    RULES,
    deploy,
    eventually,
    image_of,
    revision_of,
    rollout_status,
    serving_v1,
    slack_texts,
    state_of,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]


async def test_a_deploy_with_12pct_errors_is_rolled_back_and_people_are_told(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

        await eventually(lambda: image_of(stack) == "backend:v1", timeout=90, stack=stack,
                         what="rollguard to roll backend back to v1")
        assert "successfully rolled out" in await rollout_status(stack)

        history = await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")
        # Revision 1's ReplicaSet was re-used by the undo and is now revision 3, as kubectl rollout undo does.
        assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"], history

        describe = await stack.kubectl("describe", "deployment/backend", "-n", "staging")
        assert "RolledBack" in describe, describe
        assert "error-rate-over-5pct" in describe, describe

        await eventually(lambda: state_of(stack).get("phase") in ("rolling-back", "rolled-back"), timeout=30,
                         what="the state annotation to record the rollback", stack=stack)
        state = state_of(stack)
        assert [r["hash"] for r in state["rolledBack"]] == [state["rollout"]["hash"]]

        await eventually(lambda: len(stack.pagerduty.open_incidents()) == 1, timeout=30,
                         what="one PagerDuty incident", stack=stack)
        incident = stack.pagerduty.open_incidents()[0]
        assert incident.dedup_key == "rollguard/staging/backend/2"
        assert incident.severity == "critical"
        details = incident.events[0]["payload"]["custom_details"]
        assert details["rule"] == "error-rate-over-5pct", details

        await eventually(lambda: any("Rolled back staging/backend from revision 2 to revision 1" in t
                                     for t in slack_texts(stack)), timeout=15,
                         what="Slack to hear of the rollback", stack=stack)
