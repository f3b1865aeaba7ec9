"""resolveOnRecovery: once rollguard's rollback has completed, the rollout's PagerDuty incident is resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo.stack import running_stack
from tests.e2ekit import deploy, eventually, image_of, serving_v1, slack_texts

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

RULES = Path(__file__).parent / "data" / "e2e" / "rules-resolve"


async def test_the_incident_is_resolved_once_the_rollback_has_completed(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=90, stack=stack,
                         what="rollguard to roll backend back to v1")
        await eventually(lambda: any(i.dedup_key == "rollguard/staging/backend/2" and not i.is_open
                                     for i in stack.pagerduty.incidents),
                         timeout=60, stack=stack, what="the incident to be resolved")
        incident = stack.pagerduty.incident("rollguard/staging/backend/2")
        assert incident is not None
        actions = [event["event_action"] for event in incident.events]
        assert actions == ["trigger", "trigger", "resolve"], actions  # rolled back, completed, recovered
        assert stack.pagerduty.open_incidents() == []
        await eventually(lambda: any("recovered" in text for text in slack_texts(stack)), timeout=15,
                         what="Slack to hear the deployment recovered", stack=stack)
