"""End to end: "performance degraded > 50%" asks a human, and `rollguard approve` rolls back (scenario 2).

Revision 2 answers in 180 ms where revision 1 answered in 100 ms: its p95 is 1.8 × the baseline,
the `latency-worse-than-50pct` rule (action review) pages PagerDuty at severity warning with the
approve command, and says so on Slack. Nothing is rolled back until a human approves; an approval
naming an older revision is ignored (Event ApprovalIgnored); `rollguard approve staging/backend`
rolls back to revision 1 and the approval annotations are cleared.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sim.demo.manifests import backend_service
from sim.demo.stack import Stack, running_stack
from tests.e2ekit import (
    RULES,
    current_hash,
    deploy,
    deployment,
    event_reasons,
    events_of,
    eventually,
    image_of,
    revision_of,
    rollguard_cli,
    rollout_history,
    rollout_status,
    slack_messages_for,
    state_is_for,
    state_of,
    wait_event,
    wait_for_traffic,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

APPROVALS = ("rollguard.io/approve", "rollguard.io/approve-revision")


def approval_annotations(stack: Stack) -> dict[str, str]:
    annotations = deployment(stack)["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k in APPROVALS}


async def test_a_slower_deploy_is_reviewed_and_rolled_back_only_when_approved(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await stack.apply(backend_service())
        await deploy(stack, "backend:v1", SIM_LATENCY_MS="100")
        await rollout_status(stack)
        await wait_for_traffic(stack)  # the baseline is revision 1's p95 at the moment revision 2 starts

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="180")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
        await eventually(lambda: state_is_for(stack, 2) and state_of(stack).get("phase") == "review", timeout=60,
                         what="rollguard to ask for a review of revision 2", stack=stack)
        assert state_of(stack)["decision"]["rule"] == "latency-worse-than-50pct", state_of(stack)

        await eventually(lambda: len(stack.pagerduty.open_incidents()) == 1, timeout=30,
                         what="a PagerDuty incident for the review", stack=stack)
        incident = stack.pagerduty.open_incidents()[0]
        assert (incident.dedup_key, incident.severity) == ("rollguard/staging/backend/2", "warning"), incident
        details = incident.events[0]["payload"]["custom_details"]
        assert details["rule"] == "latency-worse-than-50pct", details
        assert "rollguard approve staging/backend" in details["approve_command"], details
        assert details["baseline"]["p95_latency"] > 0, details
        await eventually(lambda: any("Review needed" in t for t in slack_messages_for(stack, 2)), timeout=15,
                         what="Slack to say a review is needed", stack=stack)
        await wait_event(stack, "ReviewRequested")

        # Not rolled back by itself: past the bake time, revision 2 still runs and the review still waits.
        state = state_of(stack)
        bake_over = float(state["completedAt"]) + 10 + 2
        await eventually(lambda: time.time() > bake_over, timeout=30, what="the bake time to end", stack=stack)
        assert image_of(stack) == "backend:v2", "a review must never roll back by itself"
        assert state_of(stack).get("phase") == "review", state_of(stack)

        # An approval for an older revision (a stale command from another review) is ignored.
        await stack.kubectl("annotate", "deployment/backend", "-n", "staging", "rollguard.io/approve=rollback",
                            "rollguard.io/approve-revision=1")
        await eventually(lambda: "ApprovalIgnored" in event_reasons(stack), timeout=15,
                         what="the stale approval to be ignored", stack=stack)
        ignored = await wait_event(stack, "ApprovalIgnored")
        assert "revision 1" in ignored["message"], ignored
        await eventually(lambda: approval_annotations(stack) == {}, timeout=10,
                         what="the stale approval annotations to be removed", stack=stack)
        assert image_of(stack) == "backend:v2", "a stale approval must not roll back"
        assert state_of(stack).get("phase") == "review", state_of(stack)

        # The real CLI approves the current revision.
        code, out, err = await rollguard_cli("approve", "staging/backend", "--kubeconfig",
                                             str(stack.cluster.kubeconfig))
        assert code == 0, err
        assert "rollback of revision 2 approved" in out, out
        assert "no review is pending" not in out, out
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=30,
                         what="the approved rollback to revision 1", stack=stack)
        await eventually(lambda: approval_annotations(stack) == {}, timeout=10,
                         what="the approval annotations to be removed", stack=stack)
        assert "successfully rolled out" in await rollout_status(stack)
        assert rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")) \
            == ["2", "3"]
        rolled = await wait_event(stack, "RolledBack")
        assert "approved by" in rolled["message"], rolled
        await eventually(lambda: any("Rolled back staging/backend from revision 2 to revision 1" in t
                                     for t in slack_messages_for(stack, 2)), timeout=15,
                         what="Slack to report the rollback", stack=stack)
        await eventually(lambda: stack.pagerduty.open_incidents()[0].severity == "critical", timeout=15,
                         what="the incident to be raised to critical by the rollback", stack=stack)
        assert len(stack.pagerduty.incidents) == 1, stack.pagerduty.incidents

        # An SRE who approves at once, while the analysis is still baking, is obeyed too.
        await wait_for_traffic(stack, pod_template_hash=current_hash(stack))
        # Slow to become ready, so the rollout completes (and the bake time starts) after the review.
        await deploy(stack, "backend:v4", SIM_LATENCY_MS="180", SIM_READY_DELAY="4")
        await eventually(lambda: revision_of(stack) == 4, timeout=30, what="revision 4 to start", stack=stack)
        await eventually(lambda: state_is_for(stack, 4) and state_of(stack).get("phase") == "review", timeout=60,
                         what="rollguard to ask for a review of revision 4", stack=stack)
        completed = state_of(stack).get("completedAt")
        assert completed is None or time.time() < float(completed) + 10 - 2, \
            "the approval must be sent while the analysis still runs (before the bake time ends)"
        code, out, err = await rollguard_cli("approve", "staging/backend", "--kubeconfig",
                                             str(stack.cluster.kubeconfig))
        assert (code, "rollback of revision 4 approved" in out) == (0, True), (out, err)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=30,
                         what="the approved rollback of revision 4", stack=stack)
        assert [e["reason"] for e in events_of(stack)].count("ApprovalIgnored") == 1, event_reasons(stack)
        await eventually(lambda: approval_annotations(stack) == {}, timeout=10,
                         what="the approval annotations of revision 4 to be removed", stack=stack)
