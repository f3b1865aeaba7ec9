"""End to end: an announcement that was decided but not delivered survives the daemon and the rollout.

The notification pipeline retries from memory. A daemon killed while PagerDuty is failing used to lose
the page it owed; and once a newer deploy had replaced the rolled-back rollout, the next process had no
way to know anything was owed (the chaos schedules' seeds 29, 55, 62, 73, 75, 79 and 80 found this).
The durable outbox keeps the announcement in the state annotation until it is delivered, carries it
past the newer rollout's state, and the next leader sends it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo.manifests import backend_service
from sim.demo.stack import Stack, running_stack
from tests.e2ekit import (
    SLOW_RULES,
    deploy,
    events_of,
    eventually,
    image_of,
    revision_of,
    rollout_status,
    state_of,
    wait_event,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

DEDUP = "rollguard/staging/backend/2"


def page_attempts(stack: Stack) -> int:
    return sum(1 for r in stack.pagerduty.received if DEDUP in str(r.body))


async def test_a_page_lost_in_a_crash_is_sent_after_a_newer_deploy_replaced_the_rollout(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=SLOW_RULES) as stack:
        await stack.apply(backend_service())
        await deploy(stack, "backend:v1")
        await rollout_status(stack)
        stack.pagerduty.fail_next(100_000, status=503)  # PagerDuty is down from here on
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="the rollback of revision 2")
        await wait_event(stack, "RolledBack")
        await eventually(lambda: page_attempts(stack) >= 2, timeout=20, stack=stack,
                         what="the rollback page to be tried (and refused) twice")
        await eventually(lambda: [(e["kind"], e["revision"]) for e in state_of(stack).get("outbox") or []]
                         == [("rollback_started", 2)], timeout=10, stack=stack,
                         what="the undelivered page to be saved in the outbox")

        # Killed while the page waits for a retry; a newer deploy lands while no replica runs.
        await stack.stop_daemon(kill=True)
        assert stack.pagerduty.incident(DEDUP) is None
        await deploy(stack, "backend:v3")
        await eventually(lambda: revision_of(stack) == 4, timeout=30, stack=stack, what="revision 4 to start")
        stack.pagerduty.clear_faults()
        await stack.start_daemon()

        await eventually(lambda: stack.pagerduty.incident(DEDUP) is not None, timeout=30, stack=stack,
                         what="the owed rollback page, from the next process")
        incident = stack.pagerduty.incident(DEDUP)
        assert incident is not None
        assert "Rolled back staging/backend from revision 2 to revision 1" in incident.summary, incident.summary
        details = str(incident.events[-1])
        assert "Sent again: rollguard decided this at" in details, details
        # Delivered: the entry leaves the outbox; the newer revision is analysed on its own meanwhile.
        await eventually(lambda: not state_of(stack).get("outbox"), timeout=20, stack=stack,
                         what="the delivered page to leave the outbox")
        assert state_of(stack)["rollout"]["revision"] == 4, state_of(stack)
        assert image_of(stack) == "backend:v3"
        # ... as a deploy of its own, never taken for rollguard's undo.
        await eventually(lambda: any(e["reason"] == "AnalysisStarted" and "revision 4 started" in e["message"]
                                     for e in events_of(stack)), timeout=20, stack=stack,
                         what="revision 4 to be analysed")
