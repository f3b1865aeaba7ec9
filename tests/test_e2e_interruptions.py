"""End to end: a bad deploy whose analysis is interrupted (scenarios 4, 5 and 6).

* Prometheus goes away before the error-rate rule's `for` elapsed: "cannot measure" never counts as
  "bad" — no rollback while it is down (the held rule escalates to review, per `hold`); once it is back
  the rule's pending timer (kept while held) has long run out, and the rollback follows.
* The daemon is killed mid-analysis and started again: it resumes from the state annotation with the
  rule's `for` timer intact, and exactly one rollback happens; killed again right after the rollback,
  the restarted daemon does not roll back a second time.
* A newer deploy lands while the bad one is analysed: it is never undone; the older analysis ends
  and the newer revision is analysed on its own.

These use the policy with `for: 6s` on the error-rate rule, so there is time to act inside the window.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sim.demo.manifests import backend_service
from sim.demo.stack import Stack, running_stack
from sim.resources import EVENTS
from tests.e2ekit import (
    SLOW_RULES,
    deploy,
    event_reasons,
    eventually,
    image_of,
    pending_since,
    revision_of,
    rollout_history,
    rollout_status,
    slack_texts,
    state_is_for,
    state_of,
    wait_event,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

RULE = "error-rate-over-5pct"
FOR = 6.0


async def start_bad_deploy(stack: Stack) -> float:
    """v1, then v2 with 12% errors; returns when the error-rate rule's timer runs (its start)."""
    await stack.apply(backend_service())
    await deploy(stack, "backend:v1")
    await rollout_status(stack)
    await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
    await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
    await eventually(lambda: state_is_for(stack, 2) and pending_since(stack, RULE) is not None, timeout=40,
                     interval=0.05, what="the error-rate rule's for: timer to start", stack=stack)
    since = pending_since(stack, RULE)
    assert since is not None
    assert image_of(stack) == "backend:v2"
    return since


async def history(stack: Stack) -> list[str]:
    return rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging"))


async def test_prometheus_down_holds_the_rollback_until_it_is_back(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=SLOW_RULES) as stack:
        prometheus = stack.cluster.prometheus
        assert prometheus is not None
        since = await start_bad_deploy(stack)
        await prometheus.stop()
        assert time.time() < since + FOR, "Prometheus must be stopped before the rule could match"

        # While it is down, for well past the rule's `for`: never a rollback; `hold` escalates to review.
        down_until = time.time() + FOR + 4
        while time.time() < down_until:
            assert image_of(stack) == "backend:v2", "rolled back while Prometheus was down"
            assert "RolledBack" not in event_reasons(stack), event_reasons(stack)
            assert stack.daemon_failed() is None, stack.daemon_failed()
            await asyncio.sleep(0.2)
        assert state_of(stack).get("phase") == "review", state_of(stack)
        review = await wait_event(stack, "ReviewRequested")
        assert "unreachable" in review["message"], review
        await eventually(lambda: len(stack.pagerduty.open_incidents()) == 1, timeout=10,
                         what="the review page", stack=stack)
        assert stack.pagerduty.open_incidents()[0].severity == "warning"

        await prometheus.start()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=30, stack=stack,
                         what="the rollback once Prometheus answers again")
        rolled = await wait_event(stack, "RolledBack")
        assert RULE in rolled["message"], rolled
        assert await history(stack) == ["2", "3"]
        # The pending timer was kept while the rule was held: the match counts from before the outage.
        assert pending_since(stack, RULE) == since, state_of(stack)


async def test_a_killed_daemon_resumes_its_timers_and_rolls_back_once(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=SLOW_RULES) as stack:
        since = await start_bad_deploy(stack)
        await stack.stop_daemon(kill=True)
        assert time.time() < since + FOR, "the daemon must be killed before the rule could match"
        assert image_of(stack) == "backend:v2"
        await stack.start_daemon()

        await eventually(lambda: image_of(stack) == "backend:v1", timeout=40, stack=stack,
                         what="the resumed analysis to roll back")
        await eventually(lambda: state_of(stack).get("phase") in ("rolling-back", "rolled-back"), timeout=15,
                         what="the state annotation to record the rollback", stack=stack)
        state = state_of(stack)
        # Resumed, not restarted: the timer that started before the kill is the one that matched.
        assert pending_since(stack, RULE) == since, state
        assert state["decision"]["at"] >= since + FOR, state

        # Killed right after the rollback and started again: no second rollback.
        await stack.stop_daemon(kill=True)
        await stack.start_daemon()
        assert "successfully rolled out" in await rollout_status(stack)
        await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=20,
                         what="the rollback to be recorded as completed", stack=stack)
        await asyncio.sleep(3)  # a few evaluation intervals: room for a wrong second undo
        assert image_of(stack) == "backend:v1"
        assert await history(stack) == ["2", "3"], "exactly one undo"
        # Killed before its page was recorded as delivered, the rollback is announced again by the next
        # process (a lost page is worse than a repeated one); every announcement is of the one undo.
        rolled = {e["message"].split(":")[0] for e in stack.cluster.store.list_objects(EVENTS, "staging")[0]
                  if e.get("reason") == "RolledBack"}
        assert rolled == {"Rolled back staging/backend from revision 2 to revision 1"}, rolled
        assert [r["hash"] for r in state_of(stack)["rolledBack"]] == [state["rollout"]["hash"]], state_of(stack)
        await eventually(lambda: any("Rollback completed" in t for t in slack_texts(stack)), timeout=15,
                         what="Slack to hear the rollback completed", stack=stack)
        texts = slack_texts(stack)
        # Killed while the page's delivery was awaited, the announcement was still in the outbox: the
        # next process sends it again (marked so), a repeat rather than a loss. Never a second rollback.
        rolled_texts = [t for t in texts if "Rolled back staging/backend from revision" in t]
        assert 1 <= len(rolled_texts) <= 2, texts
        assert all("Rolled back staging/backend from revision 2 to revision 1" in t for t in rolled_texts), texts
        assert [i.dedup_key for i in stack.pagerduty.incidents] == ["rollguard/staging/backend/2"], \
            stack.pagerduty.incidents


async def test_a_newer_deploy_during_analysis_is_never_undone(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=SLOW_RULES) as stack:
        since = await start_bad_deploy(stack)
        await deploy(stack, "backend:v3", SIM_ERROR_RATIO="0.01")
        assert time.time() < since + FOR, "v3 must land before v2's rule could match"
        await eventually(lambda: revision_of(stack) == 3, timeout=30, what="revision 3 to start", stack=stack)

        # v2's rule would have matched by now had its analysis gone on; v3 stays, and is analysed itself.
        await eventually(lambda: state_is_for(stack, 3) and state_of(stack).get("phase") == "passed", timeout=60,
                         what="revision 3's analysis to pass", stack=stack)
        assert image_of(stack) == "backend:v3"
        assert await history(stack) == ["1", "2", "3"]
        reasons = event_reasons(stack)
        assert "RolledBack" not in reasons, reasons
        assert "RollbackSkipped" not in reasons, reasons
        assert reasons.count("AnalysisPassed") == 1, reasons
        assert stack.pagerduty.events == [], stack.pagerduty.events
        assert not any("Rolled back" in t or "Would roll back" in t for t in slack_texts(stack)), slack_texts(stack)
