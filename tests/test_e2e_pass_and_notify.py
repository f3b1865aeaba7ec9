"""End to end: deploys that are fine, or only worth a note, are left alone (scenarios 1 and 3).

Two sequential deploys on one stack: revision 2 (1% errors) passes its analysis; revision 3 writes a
few error log lines, which the `minor-errors` rule (action notify) reports on Slack with the lines
as evidence — no rollback, no page.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo.stack import running_stack
from sim.receivers.slack import SlackMessage
from tests.e2ekit import (
    RULES,
    blocks_text,
    deploy,
    events_of,
    eventually,
    image_of,
    revision_of,
    rollout_history,
    serving_v1,
    slack_messages_for,
    slack_thread_for,
    state_is_for,
    state_of,
    wait_event,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]


async def test_a_healthy_deploy_passes_and_a_noisy_one_is_only_noted(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)

        # --- scenario 1: 1% errors is within the policy: passes after the bake time ---
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.01")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
        await eventually(lambda: state_is_for(stack, 2) and state_of(stack).get("phase") == "passed", timeout=60,
                         what="revision 2's analysis to pass", stack=stack)
        assert image_of(stack) == "backend:v2", "a passing deploy must not be rolled back"
        # The state annotation is saved before the Event is recorded (the outbox entry must be durable
        # first), so a user may see `passed` a moment before `describe` shows why.
        await wait_event(stack, "AnalysisPassed")
        describe = await stack.kubectl("describe", "deployment/backend", "-n", "staging")
        assert "AnalysisPassed" in describe, describe
        await eventually(lambda: len(slack_messages_for(stack, 2)) >= 2, timeout=15,
                         what="Slack to get the started and passed messages of revision 2", stack=stack)
        texts = slack_messages_for(stack, 2)
        assert "Rollout started" in texts[0], texts
        assert any("Rollout complete" in t and "passed" in t for t in texts[1:]), texts
        assert stack.pagerduty.events == [], f"a passing deploy must not page: {stack.pagerduty.events}"

        # --- scenario 3: a few error log lines → one Slack note, nothing else ---
        passed_events = len(events_of(stack))
        await deploy(stack, "backend:v3", SIM_ERROR_RATIO="0.01", SIM_LOG_RATE="1", SIM_LOG_ERROR_RATIO="0.2")
        await eventually(lambda: revision_of(stack) == 3, timeout=30, what="revision 3 to start", stack=stack)

        def notes() -> list[SlackMessage]:
            return [m for m in slack_thread_for(stack, 3) if m.thread_ts is not None and "Rule matched" in m.text]

        await eventually(lambda: len(notes()) == 1, timeout=60,
                         what="Slack to report the minor-errors rule for revision 3", stack=stack)
        note = blocks_text(*notes())
        assert "minor-errors" in note, note
        assert "ERROR GET" in note, f"the Slack note must quote the matching log lines as evidence:\n{note}"
        await eventually(lambda: state_is_for(stack, 3) and state_of(stack).get("phase") == "passed", timeout=60,
                         what="revision 3's analysis to end (notify does not stop it)", stack=stack)
        assert image_of(stack) == "backend:v3", "a notify rule must never roll back"
        assert rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")) \
            == ["1", "2", "3"]
        assert len(notes()) == 1, slack_messages_for(stack, 3)
        reasons = [str(e.get("reason")) for e in events_of(stack)[passed_events:]]
        assert "RuleMatched" in reasons, reasons
        assert "RolledBack" not in reasons, reasons
        assert stack.pagerduty.events == [], f"a notify rule must not page: {stack.pagerduty.events}"
