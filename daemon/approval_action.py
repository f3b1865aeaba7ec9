"""Acting on a human's answer to a rollout held for review: the approve or deny annotations
(`daemon.approval` judges them) are cleared, then the rollout is rolled back (approved) or its analysis
ends (denied). Called by the reconciler on every reconcile of a Deployment a policy selects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from daemon.actions import Actions
from daemon.approval import (
    APPROVE_ANNOTATION,
    APPROVE_REVISION_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    Decision,
    judge_approval,
)
from daemon.lifecycle import Event, Stage
from daemon.rules.evaluate import Verdict
from daemon.rules.model import Action
from daemon.tracking import TaskRunner, Tracked
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.reconcile")


async def act_on_approval(key: tuple[str, str], tracked: Tracked, deployment: Mapping[str, Any], *,
                          writer: ClusterWriter, actions: Actions, tasks: TaskRunner) -> None:
    """Act on the approval annotations of `deployment` (whose rollout is `tracked`), if it has any."""
    annotations: Mapping[str, str] = (deployment.get("metadata") or {}).get("annotations") or {}
    state = tracked.current_state()
    pending = tracked.identity.revision if (
        tracked.rollout is not None and state.phase == Stage.REVIEW
        and state.is_for(tracked.identity.revision, tracked.identity.pod_template_hash or "")) else None
    approval = judge_approval(annotations, revision=tracked.identity.revision, pending_revision=pending)
    if approval is None:
        return
    try:
        await writer.clear_annotations(
            key[0], key[1], (APPROVE_ANNOTATION, APPROVE_REVISION_ANNOTATION, APPROVED_BY_ANNOTATION))
    except NotWriting:
        pass  # dry run: the approval stays, and is judged again (and ignored) on the next event
    except Exception as exc:  # an approval must still be acted on when the clearing fails
        log.warning("could not clear the approval annotations", namespace=key[0], deployment=key[1],
                    error=str(exc))
    if approval.decision is Decision.IGNORED or tracked.rollout is None:
        log.warning("approval ignored", namespace=key[0], deployment=key[1], problem=approval.problem)
        await writer.event(deployment, type_="Warning", reason="ApprovalIgnored", message=str(approval.problem))
        return
    rollout = tracked.rollout
    approver = approval.approver_text
    last = tracked.analysis.last_verdict if tracked.analysis is not None else None
    await tasks.stop(tracked, "a human decided the review")
    if approval.decision is Decision.DENY:
        tracked.state = await actions.denied(rollout, state, approver)
        tasks.record_finished(tracked)
        return
    verdict = Verdict(Action.ROLLBACK, last.deciding if last else (),
                      last.reason if last else "rollback approved by a human after review")
    tasks.spawn(key, tracked, rollout, lambda: actions.rollback(
        rollout, verdict, state, event=Event.APPROVED, approved_by=approver), "rollback")
