"""End to end: failing notification receivers never delay a rollback, and retries never duplicate (scenario 7).

Slack answers 429 with Retry-After and PagerDuty 500 while a bad deploy is being rolled back. The
rollback is written on the evaluation at which the rule's `for` runs out, as it would be without
faults (the bound is the policy's schedule, not machine speed); every documented message then
arrives exactly once, and PagerDuty holds one incident keyed by the rollout.
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
    pending_since,
    revision_of,
    serving_v1,
    slack_messages_for,
    state_of,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

RULE = "error-rate-over-5pct"
FOR = 3.0  # the rule's `for`
INTERVAL = 1.0  # the policy's evaluation interval


async def test_receivers_failing_do_not_delay_the_rollback_nor_duplicate_alerts(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await eventually(lambda: len(slack_messages_for(stack, 1)) == 1, timeout=15,
                         what="revision 1's Slack message (before the faults)", stack=stack)

        stack.slack.fail_next(3, status=429, retry_after=1)
        stack.pagerduty.fail_next(2, status=500)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="rollguard to roll back revision 2")
        await eventually(lambda: state_of(stack).get("phase") in ("rolling-back", "rolled-back"), timeout=15,
                         what="the state annotation to record the rollback", stack=stack)

        # The undo was written on the first evaluation after `for` ran out: same schedule as without faults.
        state = state_of(stack)
        since = pending_since(stack, RULE)
        assert since is not None, state
        matched_by = since + FOR
        decided_at = float(state["decision"]["at"])
        assert state["decision"]["rule"] == RULE, state
        assert matched_by <= decided_at <= matched_by + INTERVAL + 1.0, (
            f"rollback written {decided_at - matched_by:.2f}s after the rule could first match "
            f"(allowed: one interval of {INTERVAL:g}s plus 1s); notification retries must not delay it")

        # Every documented message, exactly once, in spite of the retries.
        await eventually(lambda: any("Rollback completed" in t for t in slack_messages_for(stack, 2)), timeout=30,
                         what="Slack to hear the rollback completed", stack=stack)
        await eventually(lambda: len(stack.pagerduty.events) >= 2, timeout=30,
                         what="PagerDuty to get the rollback's events", stack=stack)
        texts = slack_messages_for(stack, 2)
        assert len(texts) == 3, texts
        assert "Rollout started" in texts[0], texts
        assert "Rolled back staging/backend from revision 2 to revision 1" in texts[1], texts
        assert "Rollback completed" in texts[2], texts
        assert [r.status for r in stack.slack.received if not r.accepted] == [429, 429, 429]

        assert [i.dedup_key for i in stack.pagerduty.incidents] == ["rollguard/staging/backend/2"]
        kinds = [e["payload"]["custom_details"]["kind"] for e in stack.pagerduty.events]
        assert kinds == ["rollback_started", "rollback_completed"], kinds
        assert {e["payload"]["severity"] for e in stack.pagerduty.events} == {"critical"}
        assert [r.status for r in stack.pagerduty.received if not r.accepted] == [500, 500]
