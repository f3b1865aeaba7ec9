"""Reconciling one Deployment: what its rollout is, which task judges or acts on it, and what a human
asked for (acted on by `daemon.approval_action`). Level-triggered: each call looks at the Deployment and its
ReplicaSets as they are now, with the state annotation, and hands decisions to `Actions` (which writes
through the one writer).

Per Deployment at most one task runs: the analysis of its current rollout, or the action that
replaced it (a rollback with its pre-rollback Job, an approved rollback). Long waits happen in that
task, never in the caller, so one Deployment's Job never delays another's rollback.

First sight (daemon start, or this replica became leader) is a resume, never a fresh
announcement: every Deployment whose newest revision has no final verdict is judged from its
persisted state and its current status (see `Reconciler._resume`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog

from daemon.actions import Actions, RollbackRegistry
from daemon.analysis_seams import Measurer
from daemon.approval_action import act_on_approval
from daemon.clock import Clock
from daemon.gitops.owner import reapplied_note
from daemon.kube.rollout_state import (
    RolloutId,
    RolloutPhase,
    is_new_rollout,
    new_replica_set,
    revision_of,
    rollout_identity,
    rollout_status,
)
from daemon.kube.state import STATE_ANNOTATION, AnalysisState, StateError, read_state, remembered_history
from daemon.lifecycle import LIVE, Event, Stage
from daemon.metrics import Metrics
from daemon.rollout import (
    Rollout,
    RolloutKind,
    build_rollout,
    classify,
    is_reused,
    rolling_back_from_state,
    started_at,
)
from daemon.rules.evaluate import Verdict
from daemon.rules.model import Action, GitOpsMode, RollbackPolicy
from daemon.tracking import TaskRunner, Tracked
from daemon.writer import ClusterWriter

log = structlog.get_logger("rollguard.reconcile")

Key = tuple[str, str]
Obj = Mapping[str, Any]
LATE_GRACE = 300.0
"""Seconds: a rollout that completed while no replica was watching is still analysed when its
ReplicaSet is younger than the policy's initialDelay + bakeTime + this (and rollguard had judged the
Deployment before: rollouts that completed before rollguard was installed are not judged)."""
FOLLOWED = "followed"
"""`decision.action` of a rollout that is followed but not analysed (someone else's undo)."""


class Policies(Protocol):
    def policy_for(self, namespace: str, labels: Mapping[str, str]) -> RollbackPolicy | None: ...


class Reconciler:
    """Judges each Deployment's rollout from what is observed now (see the module docstring)."""

    def __init__(self, *, policies: Policies, measurer: Measurer, actions: Actions, writer: ClusterWriter,
                 registry: RollbackRegistry, clock: Clock, metrics: Metrics | None = None) -> None:
        self._policies = policies
        self._tasks = TaskRunner(measurer=measurer, actions=actions, clock=clock, metrics=metrics)
        self._actions = actions
        self._writer = writer
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._tracked: dict[Key, Tracked] = {}
        self._invalid_reported: set[tuple[Key, str]] = set()
        self._departing: list[Tracked] = []
        """Replaced rollouts whose task still runs (a rollback announcing itself): still listed as live."""

    # ----- views -----

    def analyses(self) -> list[dict[str, Any]]:
        self._departing = [t for t in self._departing if t.live()]
        live = [t.analysis.view() for t in (*self._tracked.values(), *self._departing)
                if t.analysis is not None and t.live()]
        views = live + list(self._tasks.finished)
        for view in views:
            owner = self._actions.gitops.owner((str(view.get("namespace")), str(view.get("deployment"))))
            if owner is not None:
                view["gitops"] = owner.view()
        return views

    def forget_all(self) -> None:
        self._tracked.clear()

    async def cancel_all(self) -> None:
        """Cancel every task, those of replaced rollouts still finishing (a rollback's Job) included."""
        tasks = [t.task for t in (*self._tracked.values(), *self._departing)
                 if t.task is not None and not t.task.done()]
        self._departing.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ----- the reconcile -----

    async def reconcile(self, key: Key, deployment: Obj | None, replica_sets: Sequence[Obj], *,
                        first_sight: bool) -> None:
        tracked = self._tracked.get(key)
        self._actions.gitops.observe(key, deployment)
        if deployment is None:
            if tracked is not None:
                await self._tasks.stop(tracked, "deployment deleted")
                del self._tracked[key]
            return
        identity_status = rollout_status(deployment, replica_sets)
        if identity_status.phase is RolloutPhase.WAITING_SPEC:
            # The controller has not observed the latest template: a re-used ReplicaSet still carries
            # its old revision number. Its update (an event) comes; judge what it says then.
            return
        identity = rollout_identity(deployment, replica_sets)
        if identity.pod_template_hash is None:
            return  # the controller has not created the new ReplicaSet yet; its event will come
        deployment_revision = revision_of(deployment) or 0
        if deployment_revision > identity.revision:
            # A re-used ReplicaSet whose renumbering this replica has not seen yet (its event comes
            # after the Deployment's): the Deployment's own revision is the rollout's.
            identity = replace(identity, revision=deployment_revision)
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        policy = self._policies.policy_for(key[0], labels)
        if tracked is None:
            tracked = self._tracked[key] = Tracked(identity, identity_status.phase)
            state = self._state(key, deployment, replica_sets, tracked)
            if first_sight:
                # What a previous leader decided but may not have delivered: sent again first.
                await self._actions.outbox.resend(deployment, state, policy=policy.name if policy else None)
                await self._resume(key, tracked, deployment, replica_sets, policy, state)
            else:
                await self._new_rollout(key, tracked, deployment, replica_sets, policy, state)
        elif identity.pod_template_hash == tracked.identity.pod_template_hash:
            if identity.revision != tracked.identity.revision:
                # The controller renumbered the same template (a re-used ReplicaSet): same rollout.
                await self._renumbered(tracked, identity)
        elif is_new_rollout(tracked.identity, identity):
            previous = tracked
            if previous.live():
                self._departing.append(previous)
            tracked = self._tracked[key] = Tracked(identity, identity_status.phase)
            await self._superseded(key, previous, identity)
            state = self._state(key, deployment, replica_sets, tracked, memory=previous.current_state())
            await self._new_rollout(key, tracked, deployment, replica_sets, policy, state)
        await self._phase_changed(tracked, identity_status.phase, identity_status.message)
        if policy is not None:
            await act_on_approval(key, tracked, deployment, writer=self._writer, actions=self._actions,
                                  tasks=self._tasks)

    def _state(self, key: Key, deployment: Obj, replica_sets: Sequence[Obj], tracked: Tracked, *,
               memory: AnalysisState | None = None) -> AnalysisState:
        """The validated state annotation, with the Deployment-wide memory of every copy (its
        ReplicaSets', and what this process remembers) added; an invalid one is reported and ignored."""
        now = self._clock.now()
        try:
            state = read_state(deployment, now=now)
        except StateError as exc:
            report = (key, str(exc))
            if report not in self._invalid_reported:
                self._invalid_reported.add(report)
                log.warning("ignoring invalid state annotation", namespace=key[0], deployment=key[1], error=str(exc))
                task = asyncio.create_task(self._writer.event(
                    deployment, type_="Warning", reason="InvalidState",
                    message=f"{exc}; rollguard ignores it and treats this rollout as seen for the first time"))
                _keep(task)
            state = AnalysisState()
        return state.merged_memory([*remembered_history(replica_sets, now=now), *([memory] if memory else [])])

    async def _renumbered(self, tracked: Tracked, identity: RolloutId) -> None:
        old = tracked.identity.revision
        tracked.identity = identity
        for holder in (tracked, tracked.analysis):
            if holder is not None and holder.state.revision == old:
                holder.state = replace(holder.state, revision=identity.revision)
        if tracked.rollout is not None:
            tracked.rollout = replace(tracked.rollout, id=identity)
            if tracked.analysis is not None:
                tracked.analysis.rollout = tracked.rollout
                await self._actions.save(tracked.rollout, tracked.analysis.state)

    async def _new_rollout(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: Sequence[Obj],
                           policy: RollbackPolicy | None, state: AnalysisState) -> None:
        identity = tracked.identity
        if self._metrics:
            self._metrics.rollouts_seen.labels(event="started").inc()
        bad = self._registry.pop(key)
        bad_id = bad.id if bad is not None else rolling_back_from_state(state, identity)
        new_rs = new_replica_set(deployment, replica_sets)
        tracked.kind = classify(identity, new_rs=new_rs, state=state, rolling_back=bad_id)
        tracked.state = state
        if tracked.kind is RolloutKind.OWN_ROLLBACK:
            await self._follow_rollback(key, tracked, deployment, replica_sets, policy, bad, state)
            return
        if policy is None:
            return
        rollout = build_rollout(deployment, replica_sets, identity, policy,
                                started_at(deployment, replica_sets, now=self._clock.now()))
        tracked.rollout = rollout
        fresh = state.for_new_rollout(identity.revision, rollout.hash, rollout.started_at)
        if tracked.kind is RolloutKind.REAPPLIED:
            previously = state.was_rolled_back(rollout.hash)
            done = "would have been rolled back (dry run)" if self._actions.settings.dry_run else "was rolled back"
            note = (f"This template {done} by rollguard before (revision "
                    f"{previously.revision if previously else '?'}); it is analysed, but a human decides any "
                    "rollback.")
            owner = self._actions.gitops.owner(key)
            if owner is not None:  # the GitOps tool put back what rollguard undid: undoing it again would flap
                note = reapplied_note(owner, previously.revision if previously else None,
                                      suspend_first=rollout.policy.gitops is not GitOpsMode.UNDO)
            tracked.state = await self._actions.review(rollout, Verdict(Action.REVIEW, (), note), fresh,
                                                       event=Event.REVIEW_RULE)
            self._tasks.start_analysis(key, tracked, rollout, max_action=Action.REVIEW)
        elif tracked.kind is RolloutKind.UNDO_BY_SOMEONE:
            fresh = replace(fresh, decision={"action": FOLLOWED, "reason": "re-uses an earlier revision's template"})
            tracked.state = await self._actions.started(
                rollout, fresh, analysed=False,
                note="It re-uses an earlier revision's template (a rollback): followed, not analysed.")
        else:
            tracked.state = fresh
            self._tasks.start_analysis(key, tracked, rollout, announce=True)

    async def _follow_rollback(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: Sequence[Obj],
                               policy: RollbackPolicy | None, bad: Rollout | None, state: AnalysisState) -> None:
        """The rollout caused by rollguard's own undo: followed to completion, its start announced if a
        crash came between the undo and the announcement."""
        from_memory = bad is not None
        if bad is None:
            bad_id = rolling_back_from_state(state, tracked.identity)
            if policy is None or bad_id is None:
                return
            current = build_rollout(deployment, replica_sets, tracked.identity, policy,
                                    state.started_at or self._clock.now())
            bad = replace(current, id=bad_id)
        tracked.rolled_back_from = bad
        log.info("following rollguard's rollback", namespace=key[0], deployment=key[1],
                 revision=tracked.identity.revision, undoes=bad.id.revision)
        # After a restart: announce the undo if the crash came between it and its announcement. (In the
        # process that wrote the undo, the rollback task announces it itself.)
        if not from_memory and state.is_for(bad.id.revision, bad.hash) and not state.was_announced("rollback_started"):
            tracked.state = await self._actions.announce_rollback(
                bad, state, target=state.rollback.target if state.rollback else None)

    async def _resume(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: Sequence[Obj],
                      policy: RollbackPolicy | None, state: AnalysisState) -> None:
        """First sight at start or on becoming leader: judge from the state and the status, announce
        only what was decided and not yet announced."""
        identity = tracked.identity
        tracked.state = state
        if policy is None:
            return
        if state.is_for(identity.revision, identity.pod_template_hash or ""):
            rollout = build_rollout(deployment, replica_sets, identity, policy, state.started_at or self._clock.now())
            tracked.rollout, tracked.kind = rollout, RolloutKind.FRESH
            followed = (state.decision or {}).get("action") == FOLLOWED
            if state.phase in LIVE and not followed:
                log.info("resuming analysis", namespace=key[0], deployment=key[1], revision=identity.revision,
                         phase=state.phase)
                if tracked.phase is RolloutPhase.FAILED:  # the deadline passed while no replica led
                    self._tasks.spawn(key, tracked, rollout, lambda: self._actions.failed(
                        rollout, state, f'deployment "{key[1]}" exceeded its progress deadline'), "failure")
                else:
                    # A template rollguard rolled back before stays capped at review after a restart too:
                    # a human decides its rollback.
                    reapplied = state.was_rolled_back(identity.pod_template_hash or "") is not None
                    self._tasks.start_analysis(key, tracked, rollout,
                                               max_action=Action.REVIEW if reapplied else Action.ROLLBACK)
            elif state.phase == Stage.ROLLING_BACK and state.rollback is not None:
                # The undo had not landed (the bad template is still live): carry on from the saved step.
                verdict = Verdict(Action.ROLLBACK, (), state.rollback.reason)
                self._tasks.spawn(key, tracked, rollout, lambda: self._actions.rollback(rollout, verdict, state),
                                  "rollback")
            elif state.phase == Stage.FAILED:
                self._tasks.spawn(key, tracked, rollout, lambda: self._actions.failed(
                    rollout, state, f'deployment "{key[1]}" exceeded its progress deadline'), "failure")
            return
        undoing = rolling_back_from_state(state, identity)
        if undoing is not None and classify(identity, new_rs=new_replica_set(deployment, replica_sets), state=state,
                                            rolling_back=undoing) is RolloutKind.OWN_ROLLBACK:
            # (A template deployed by someone else after the undo is a newer rollout, not the undo's.)
            tracked.kind = RolloutKind.OWN_ROLLBACK
            await self._follow_rollback(key, tracked, deployment, replica_sets, policy, None, state)
            if tracked.phase is RolloutPhase.COMPLETE:
                await self._rollback_done(tracked)
            elif tracked.phase is RolloutPhase.FAILED:
                await self._rollback_failed(tracked, "its progress deadline was exceeded")
            return
        if tracked.phase is not RolloutPhase.COMPLETE:
            # A rollout that started while no replica was watching: analyse it from now on — and when
            # its deadline passed meanwhile, its `onFailure` is due now.
            await self._new_rollout(key, tracked, deployment, replica_sets, policy, state)
            if tracked.phase is RolloutPhase.FAILED:
                await self._rollout_failed(tracked, rollout_status(deployment, replica_sets).message)
            return
        if not self._writer.dry_run and not any(STATE_ANNOTATION in ((obj.get("metadata") or {}).get("annotations")
                                                                     or {}) for obj in (deployment, *replica_sets)):
            # rollguard never judged this Deployment: a rollout completed before it was installed. (In
            # dry-run nothing is ever written, so no annotation says anything: a recent rollout is judged.)
            return
        if state.was_rolled_back(identity.pod_template_hash or "") is not None:
            # A template rollguard rolled back, re-applied while no replica watched: reviewed as a re-apply.
            await self._new_rollout(key, tracked, deployment, replica_sets, policy, state)
            return
        if is_reused(new_replica_set(deployment, replica_sets)):
            return  # an undo (rollguard's own, finished, or someone else's) back to a revision already judged
        began = started_at(deployment, replica_sets, now=self._clock.now())
        timing = policy.analysis
        if self._clock.now() - began < timing.initial_delay + timing.bake_time + LATE_GRACE:
            # Completed during the gap and never judged: judge it now (its bake time starts now).
            await self._new_rollout(key, tracked, deployment, replica_sets, policy, state)
            if tracked.analysis is not None:
                tracked.analysis.rollout_completed(self._clock.now())

    async def _superseded(self, key: Key, previous: Tracked, newer: RolloutId) -> None:
        if key in self._registry:
            return  # rollguard's own undo caused the newer rollout; the rollback task ends by itself
        state = previous.current_state()
        rolling_back = state.phase == Stage.ROLLING_BACK or (
            previous.rollout is not None and self._registry.acting_on(previous.rollout))
        if previous.live() and rolling_back:
            # A rollback in progress (its Job running) is not cancelled: its fenced undo finds the newer
            # revision live and announces that the rollback was superseded (and whether the Job ran).
            # Only the previous rollout's own: an older rollout's rollback still running must not keep
            # the previous rollout's analysis alive, judging a revision that is no longer live.
            return
        running = previous.live()
        await self._tasks.stop(previous, "a newer rollout started")
        if previous.rollout is not None and running and state.phase in (*LIVE, Stage.FAILED):
            previous.state = await self._actions.superseded(previous.rollout, state, newer.revision)
            self._tasks.record_finished(previous)

    async def _phase_changed(self, tracked: Tracked, phase: RolloutPhase, message: str) -> None:
        if phase == tracked.phase:
            return
        tracked.phase = phase
        if phase is RolloutPhase.COMPLETE:
            if tracked.analysis is not None and tracked.live():
                tracked.analysis.rollout_completed(self._clock.now())
            elif tracked.rolled_back_from is not None:
                await self._rollback_done(tracked)
        elif phase is RolloutPhase.FAILED:
            if tracked.rolled_back_from is not None:
                await self._rollback_failed(tracked, message)
            else:
                await self._rollout_failed(tracked, message)

    async def _rollout_failed(self, tracked: Tracked, message: str) -> None:
        """The analysed rollout exceeded its deadline: the analysis stops, `onFailure` runs in its place."""
        if tracked.analysis is None or not tracked.live() or tracked.rollout is None:
            return
        rollout, state = tracked.rollout, tracked.current_state()
        await self._tasks.stop(tracked, "the rollout failed")
        tracked.state = state
        self._tasks.spawn(rollout.key, tracked, rollout, lambda: self._actions.failed(rollout, state, message),
                          "failure")

    async def _rollback_done(self, tracked: Tracked) -> None:
        bad = tracked.rolled_back_from
        if bad is None:
            return
        tracked.rolled_back_from = None
        tracked.state = await self._actions.rollback_completed(bad, tracked.state, tracked.identity.revision)

    async def _rollback_failed(self, tracked: Tracked, message: str) -> None:
        bad = tracked.rolled_back_from
        if bad is None:
            return
        tracked.rolled_back_from = None
        tracked.state = await self._actions.rollback_rollout_failed(bad, tracked.state, message)


_background: set[asyncio.Task[None]] = set()


def _keep(task: asyncio.Task[None]) -> None:
    """Keep a fire-and-forget task referenced until it ends (its errors are logged by the writer)."""
    _background.add(task)
    task.add_done_callback(_background.discard)
