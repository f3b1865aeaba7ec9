"""End to end: a rollout that never becomes ready fails its progress deadline (scenario 8).

Revision 2's pods never become Ready (image tag `never-ready`); with `progressDeadlineSeconds: 10`
the Deployment controller reports ProgressDeadlineExceeded. rollguard announces the failure on Slack
and pages PagerDuty (critical), and the policy's `onFailure: rollback` rolls it back to revision 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo.manifests import backend_deployment
from sim.demo.stack import running_stack
from tests.e2ekit import (
    RULES,
    all_slack_blocks_text,
    env,
    event_reasons,
    eventually,
    image_of,
    revision_of,
    rollout_status,
    serving_v1,
    slack_messages_for,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]


async def test_a_rollout_past_its_progress_deadline_is_announced_and_rolled_back(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await stack.apply(backend_deployment("backend:v2-never-ready", env=env(), progress_deadline=10,
                                             change_cause="deploy backend:v2-never-ready"))
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

        await eventually(lambda: "RolloutFailed" in event_reasons(stack), timeout=45,
                         what="rollguard to record the failed rollout", stack=stack)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=30, stack=stack,
                         what="onFailure: rollback to revision 1")
        assert "successfully rolled out" in await rollout_status(stack)
        reasons = event_reasons(stack)
        assert reasons.index("RolloutFailed") < reasons.index("RolledBack"), reasons

        await eventually(lambda: any("Rollout failed" in t for t in slack_messages_for(stack, 2)), timeout=15,
                         what="Slack to announce the failed rollout", stack=stack)
        assert 'deployment "backend" exceeded its progress deadline' in all_slack_blocks_text(stack)
        await eventually(lambda: any(e["payload"]["custom_details"]["kind"] == "rollout_failed"
                                     for e in stack.pagerduty.events), timeout=15,
                         what="PagerDuty to be paged for the failed rollout", stack=stack)
        page = next(e for e in stack.pagerduty.events if e["payload"]["custom_details"]["kind"] == "rollout_failed")
        assert page["payload"]["severity"] == "critical", page
        assert page["dedup_key"] == "rollguard/staging/backend/2", page
        assert [i.dedup_key for i in stack.pagerduty.incidents] == ["rollguard/staging/backend/2"]
        assert stack.pagerduty.incidents[0].severity == "critical"
