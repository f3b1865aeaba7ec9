"""The supervisor: turns Deployment and ReplicaSet changes into rollouts, and rollouts into analyses.

Two informers (one list+watch per kind, for every watched namespace) feed a queue of dirty
Deployment keys; one worker reconciles each key against the informers' caches:

* the rollout state (`kube.rollout_state`) and identity (revision + pod-template-hash) are computed;
* a new identity is a new rollout, classified as
  - rollguard's own rollback (it announced the undo before writing it): followed to completion,
    not analysed;
  - a re-apply of a template rollguard rolled back before: paged for review and analysed with
    rollback capped at review, so it cannot flap;
  - an undo by someone else (the template of an older ReplicaSet came back): announced, not analysed;
  - otherwise a fresh deploy: announced, and analysed if a policy selects the Deployment;
* a newer rollout of the same Deployment cancels the older analysis;
* completion starts the bake time; ProgressDeadlineExceeded is a failure (policy `onFailure`);
* `rollguard.io/approve=rollback` on a Deployment with a review pending rolls it back.

At start (and when this replica becomes leader) nothing is announced for rollouts that were
already there: analyses whose state annotation says they were in progress resume with their
timers; a rollout still progressing without state is analysed from now on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from daemon.actions import Actions
from daemon.analysis import Analysis, Measurer, Rollout
from daemon.clock import Clock
from daemon.kube.client import MERGE_PATCH, KubeClient, KubeError, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.rollout_state import (
    POD_TEMPLATE_HASH,
    RolloutId,
    RolloutPhase,
    is_new_rollout,
    owned_replica_sets,
    previous_replica_set,
    rollout_identity,
    rollout_status,
    without_hash_label,
)
from daemon.kube.state import (
    APPROVE_ANNOTATION,
    APPROVE_REVISION_ANNOTATION,
    AnalysisState,
    StateError,
    read_state,
)
from daemon.kube.watching import Informer
from daemon.metrics import Metrics
from daemon.rules.evaluate import Verdict
from daemon.rules.model import Action, RollbackPolicy
from daemon.rulesets import RuleSet
from daemon.signals.base import SignalContext

log = structlog.get_logger("rollguard.supervisor")

Key = tuple[str, str]
Obj = dict[str, Any]
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
_WAKE: Key = ("", "")  # not a Deployment: wakes the worker to act on a leadership change


def _epoch(timestamp: str | None, default: float) -> float:
    if not timestamp:
        return default
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


@dataclass
class Tracked:
    """What the supervisor knows about one Deployment."""

    identity: RolloutId
    phase: RolloutPhase
    kind: str = "untracked"
    """untracked | analysed | rollback | undo-by-someone"""
    rollout: Rollout | None = None
    state: AnalysisState = field(default_factory=AnalysisState)
    rolled_back_from: Rollout | None = None
    """For kind "rollback": the bad rollout this rollback undoes."""
    analysis: Analysis | None = None
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Rollout bookkeeping for every watched Deployment (see the module docstring)."""

    def __init__(self, *, kube: KubeClient, rules: RuleSet, measurer: Measurer, actions: Actions, clock: Clock,
                 events: EventRecorder, metrics: Metrics | None = None, namespaces: tuple[str, ...] = (),
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self._kube = kube
        self._rules = rules
        self._measurer = measurer
        self._actions = actions
        self._clock = clock
        self._events = events
        self._metrics = metrics
        self._is_leader = is_leader
        self.deployments = Informer(kube, group_version="apps/v1", plural="deployments", namespaces=namespaces,
                                    clock=clock)
        self.replicasets = Informer(kube, group_version="apps/v1", plural="replicasets", namespaces=namespaces,
                                    clock=clock)
        self._rs_by_owner: dict[str, set[Key]] = {}
        self._tracked: dict[Key, Tracked] = {}
        self._dirty: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._rolling_back: dict[Key, Rollout] = {}
        self._finished: deque[dict[str, Any]] = deque(maxlen=100)
        self._was_leader = False
        self._initial: set[Key] = set()
        """Deployments not reconciled since start or since this replica became leader: resumed, never announced."""
        self.synced = asyncio.Event()
        actions.listener = self

    # ----- public -----

    async def run(self) -> None:
        """Run the informers and the reconcile worker until cancelled; analyses are cancelled on exit."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.deployments.run(self._on_deployment), name="watch-deployments")
                group.create_task(self.replicasets.run(self._on_replicaset), name="watch-replicasets")
                group.create_task(self._worker(), name="reconcile")
        finally:
            await self._cancel_all()

    def ready(self) -> tuple[bool, str]:
        if not self.synced.is_set():
            return False, "waiting for the first list of Deployments and ReplicaSets"
        return True, "ok" + ("" if self._is_leader() else " (follower)")

    def analyses(self) -> list[dict[str, Any]]:
        live = [t.analysis.view() for t in self._tracked.values() if t.analysis is not None and t.task
                and not t.task.done()]
        return live + list(self._finished)

    def leadership_changed(self) -> None:
        """Tell the worker leadership changed (the elector calls this), so it resumes or stops analyses now."""
        self._enqueue(_WAKE)

    def rollback_intended(self, rollout: Rollout) -> None:
        self._rolling_back[(rollout.id.namespace, rollout.id.name)] = rollout

    def rollback_abandoned(self, rollout: Rollout) -> None:
        key = (rollout.id.namespace, rollout.id.name)
        if self._rolling_back.get(key) is rollout:
            del self._rolling_back[key]

    # ----- informer handlers -----

    async def _on_deployment(self, _kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        self._enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    async def _on_replicaset(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                owners = self._rs_by_owner.setdefault(str(ref.get("uid")), set())
                if kind == "DELETED":
                    owners.discard(key)
                else:
                    owners.add(key)
                self._enqueue((key[0], str(ref.get("name"))))

    def _enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._dirty.put_nowait(key)

    # ----- reconcile -----

    async def _worker(self) -> None:
        await self.deployments.synced.wait()
        await self.replicasets.synced.wait()
        self._initial = set(self.deployments.cache)
        for key in sorted(self._initial):
            self._enqueue(key)
        self.synced.set()
        log.info("synced", deployments=len(self.deployments.cache), replicasets=len(self.replicasets.cache))
        handled = 0
        while True:
            key = await self._dirty.get()
            self._queued.discard(key)
            handled += 1
            if handled % 200 == 0:
                # Queue.get() does not suspend while work is queued; let the HTTP server and the
                # watches run during a first sync of thousands of Deployments.
                await asyncio.sleep(0)
            leader = self._is_leader()
            if leader != self._was_leader:
                await self._leadership_changed(leader)
            if key == _WAKE:
                continue
            try:
                await self._reconcile(key, first_sight_is_rollout=key not in self._initial)
            except Exception:
                log.exception("reconcile failed", namespace=key[0], deployment=key[1])
            self._initial.discard(key)

    async def _leadership_changed(self, leader: bool) -> None:
        self._was_leader = leader
        if leader:
            log.info("leading: resuming analyses from state annotations")
            self._tracked.clear()  # re-read everything from the annotations, as a fresh daemon would
            self._initial = set(self.deployments.cache)
            for key in list(self.deployments.cache):
                self._enqueue(key)
        else:
            log.warning("not leading: stopping every analysis")
            await self._cancel_all()

    def _replica_sets_of(self, deployment: Obj) -> list[Obj]:
        uid = str((deployment.get("metadata") or {}).get("uid"))
        keys = self._rs_by_owner.get(uid, set())
        items = [self.replicasets.cache[k] for k in keys if k in self.replicasets.cache]
        return [dict(rs) for rs in owned_replica_sets(deployment, items)]

    async def _reconcile(self, key: Key, *, first_sight_is_rollout: bool) -> None:
        deployment = self.deployments.cache.get(key)
        tracked = self._tracked.get(key)
        if deployment is None:
            if tracked is not None:
                await self._stop_analysis(tracked, "deployment deleted")
                del self._tracked[key]
            return
        if not self._is_leader():
            return
        replica_sets = self._replica_sets_of(deployment)
        identity = rollout_identity(deployment, replica_sets)
        if identity.pod_template_hash is None:
            return  # the controller has not created the new ReplicaSet yet; its event will come
        status = rollout_status(deployment, replica_sets)
        policy = self._rules.policy_for(key[0], (deployment.get("metadata") or {}).get("labels") or {})
        if tracked is None:
            tracked = Tracked(identity, status.phase)
            self._tracked[key] = tracked
            if policy is None:
                return
            if first_sight_is_rollout:
                await self._rollout_started(key, tracked, deployment, replica_sets, policy)
            else:
                await self._resume(key, tracked, deployment, replica_sets, policy)
        elif identity.pod_template_hash == tracked.identity.pod_template_hash:
            # The same template under a new number: the controller renumbers a re-used ReplicaSet
            # (an undo) a moment after the template changed. Not another rollout.
            tracked.identity = identity
        elif is_new_rollout(tracked.identity, identity):
            previous = tracked
            tracked = Tracked(identity, status.phase, state=previous.state)
            self._tracked[key] = tracked
            await self._stop_analysis(previous, "a newer rollout started",
                                      keep_running=key in self._rolling_back)
            if policy is not None or key in self._rolling_back:
                await self._rollout_started(key, tracked, deployment, replica_sets, policy)
        await self._phase_changed(key, tracked, status.phase, status.message)
        if policy is not None:
            await self._check_approval(key, tracked, deployment)

    async def _phase_changed(self, key: Key, tracked: Tracked, phase: RolloutPhase, message: str) -> None:
        if phase == tracked.phase:
            return
        tracked.phase = phase
        now = self._clock.now()
        if phase is RolloutPhase.COMPLETE:
            if tracked.kind == "analysed" and tracked.analysis is not None:
                tracked.analysis.rollout_completed(now)
            elif tracked.kind == "rollback" and tracked.rolled_back_from is not None:
                bad = tracked.rolled_back_from
                tracked.rolled_back_from = None
                # The annotation, not memory: the rollback wrote it after this rollout was first seen.
                current = self.deployments.cache.get(key)
                state = self._read_state(current, tracked.state) if current is not None else tracked.state
                tracked.state = await self._actions.rollback_completed(bad, state, tracked.identity.revision)
        elif phase is RolloutPhase.FAILED:
            if tracked.kind == "analysed" and tracked.rollout is not None:
                await self._stop_analysis(tracked, "the rollout failed")
                tracked.state = await self._actions.failed(tracked.rollout, tracked.state, message)
            elif tracked.kind == "rollback" and tracked.rolled_back_from is not None:
                log.error("the rollback's own rollout failed", namespace=key[0], deployment=key[1], message=message)

    def _rollout(self, deployment: Obj, replica_sets: list[Obj], identity: RolloutId, policy: RollbackPolicy,
                 started_at: float) -> Rollout:
        meta = deployment["metadata"]
        template = without_hash_label(deployment["spec"]["template"])
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        hash_ = identity.pod_template_hash or ""
        ctx = SignalContext(namespace=meta["namespace"], deployment=meta["name"], revision=identity.revision,
                            pod_template_hash=hash_, pod_prefix=f"{meta['name']}-{hash_}-", labels=labels,
                            rollout_started_at=started_at)
        baseline_ctx = None
        previous = previous_replica_set(deployment, replica_sets)
        if previous is not None:
            prev_hash = str(((previous.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))
            prev_revision = int(((previous.get("metadata") or {}).get("annotations") or {}).get(
                "deployment.kubernetes.io/revision", "0"))
            baseline_ctx = replace(ctx, revision=prev_revision, pod_template_hash=prev_hash,
                                   pod_prefix=f"{meta['name']}-{prev_hash}-")
        images = tuple(str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or [])
        return Rollout(identity, policy, ctx, baseline_ctx, started_at, images, str(meta.get("uid", "")))

    def _new_rs(self, replica_sets: list[Obj], identity: RolloutId) -> Obj | None:
        for rs in replica_sets:
            if ((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH) == identity.pod_template_hash:
                return rs
        return None

    async def _rollout_started(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: list[Obj],
                               policy: RollbackPolicy | None) -> None:
        identity = tracked.identity
        now = self._clock.now()
        state = self._read_state(deployment, tracked.state)
        if self._metrics:
            self._metrics.rollouts_seen.labels(event="started").inc()
        bad = self._rolling_back.pop(key, None)
        if bad is not None and identity.pod_template_hash != bad.hash:
            tracked.kind = "rollback"
            tracked.rolled_back_from = bad
            tracked.state = state
            log.info("following rollguard's rollback", namespace=key[0], deployment=key[1],
                     revision=identity.revision, undoes=bad.id.revision)
            return
        if policy is None:
            return
        new_rs = self._new_rs(replica_sets, identity) or {}
        reused = REVISION_HISTORY in ((new_rs.get("metadata") or {}).get("annotations") or {})
        started_at = now if reused else min(now, _epoch((new_rs.get("metadata") or {}).get("creationTimestamp"), now))
        rollout = self._rollout(deployment, replica_sets, identity, policy, started_at)
        previously = state.was_rolled_back(identity.pod_template_hash or "")
        state = state.for_new_rollout(identity.revision, identity.pod_template_hash or "", started_at)
        if previously is not None:
            tracked.kind, tracked.rollout = "analysed", rollout
            note = (f"This template was rolled back by rollguard before (revision {previously.revision}); "
                    "it is analysed, but a human decides any rollback.")
            tracked.state = await self._actions.review(rollout, Verdict(Action.REVIEW, (), note), state)
            self._start_analysis(key, tracked, rollout, max_action=Action.REVIEW)
            return
        if reused:
            tracked.kind, tracked.rollout = "undo-by-someone", rollout
            tracked.state = await self._actions.started(
                rollout, state, note="It re-uses an earlier revision's template (a rollback): followed, not analysed.")
            return
        tracked.kind, tracked.rollout = "analysed", rollout
        tracked.state = state
        self._start_analysis(key, tracked, rollout, announce=True)

    async def _resume(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: list[Obj],
                      policy: RollbackPolicy) -> None:
        """First sight at start or on becoming leader: resume what the annotation says, announce nothing."""
        identity = tracked.identity
        state = self._read_state(deployment, AnalysisState())
        tracked.state = state
        in_progress = state.is_for(identity.revision, identity.pod_template_hash or "") and state.phase in (
            "analysing", "review")
        if in_progress:
            rollout = self._rollout(deployment, replica_sets, identity, policy, state.started_at or self._clock.now())
            tracked.kind, tracked.rollout = "analysed", rollout
            log.info("resuming analysis", namespace=key[0], deployment=key[1], revision=identity.revision,
                     phase=state.phase)
            if state.phase == "analysing":
                self._start_analysis(key, tracked, rollout)
            return
        if await self._resume_rollback(key, tracked, deployment, replica_sets, policy, state):
            return
        if tracked.phase in (RolloutPhase.PROGRESSING, RolloutPhase.WAITING_SPEC):
            # A rollout that started while no daemon was watching: analyse it from now on.
            await self._rollout_started(key, tracked, deployment, replica_sets, policy)

    async def _resume_rollback(self, key: Key, tracked: Tracked, deployment: Obj, replica_sets: list[Obj],
                               policy: RollbackPolicy, state: AnalysisState) -> bool:
        """First sight of a rollout that is rollguard's own rollback, made before a restart (or by the
        previous leader): the annotation says `rolling-back` for a revision whose template is no longer
        current, and the current ReplicaSet is a re-used one. Follow it to completion (and say so when it
        is already complete) instead of announcing it as someone else's undo."""
        identity = tracked.identity
        bad_hash = state.pod_template_hash
        if (state.phase != "rolling-back" or state.revision is None or not bad_hash
                or bad_hash == identity.pod_template_hash or state.was_rolled_back(bad_hash) is None):
            return False
        new_rs = self._new_rs(replica_sets, identity) or {}
        if REVISION_HISTORY not in ((new_rs.get("metadata") or {}).get("annotations") or {}):
            return False  # a fresh deploy landed after the rollback: not the rollback's rollout
        current = self._rollout(deployment, replica_sets, identity, policy, state.started_at or self._clock.now())
        bad = replace(current, id=RolloutId(key[0], key[1], state.revision, bad_hash))
        tracked.kind, tracked.rolled_back_from = "rollback", bad
        log.info("following rollguard's rollback (resumed)", namespace=key[0], deployment=key[1],
                 revision=identity.revision, undoes=state.revision, phase=tracked.phase.value)
        if tracked.phase is RolloutPhase.COMPLETE:
            tracked.rolled_back_from = None
            tracked.state = await self._actions.rollback_completed(bad, state, identity.revision)
        return True

    def _read_state(self, deployment: Obj, default: AnalysisState) -> AnalysisState:
        try:
            return read_state(deployment)
        except StateError as exc:
            meta = deployment.get("metadata") or {}
            log.warning("ignoring unreadable state annotation", namespace=meta.get("namespace"),
                        deployment=meta.get("name"), error=str(exc))
            return default

    def _start_analysis(self, key: Key, tracked: Tracked, rollout: Rollout, *, announce: bool = False,
                        max_action: Action = Action.ROLLBACK) -> None:
        analysis = Analysis(rollout, tracked.state, measurer=self._measurer, decider=self._actions,
                            clock=self._clock, metrics=self._metrics, max_action=max_action)
        tracked.analysis = analysis
        if tracked.phase is RolloutPhase.COMPLETE:
            analysis.rollout_completed(tracked.state.completed_at or self._clock.now())

        async def run() -> None:
            if self._metrics:
                self._metrics.analyses_active.inc()
            try:
                if announce:
                    analysis.state = await self._actions.started(rollout, analysis.state)
                await analysis.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("analysis crashed", namespace=key[0], deployment=key[1], revision=rollout.id.revision)
            finally:
                if self._metrics:
                    self._metrics.analyses_active.dec()
                tracked.state = analysis.state
                self._finished.appendleft(analysis.view())

        tracked.task = asyncio.create_task(run(), name=f"analysis-{key[0]}-{key[1]}-{rollout.id.revision}")

    async def _stop_analysis(self, tracked: Tracked, why: str, *, keep_running: bool = False) -> None:
        task = tracked.task
        if task is None or task.done():
            return
        if keep_running:
            return  # it is in the middle of rolling back; it ends by itself
        log.info("analysis cancelled", why=why, deployment=tracked.identity.name, revision=tracked.identity.revision)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _cancel_all(self) -> None:
        tasks = [t.task for t in self._tracked.values() if t.task is not None and not t.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ----- approvals -----

    async def _check_approval(self, key: Key, tracked: Tracked, deployment: Obj) -> None:
        annotations: Mapping[str, str] = (deployment.get("metadata") or {}).get("annotations") or {}
        approval = annotations.get(APPROVE_ANNOTATION)
        if approval is None:
            return
        wanted = annotations.get(APPROVE_REVISION_ANNOTATION)
        revision = tracked.identity.revision
        # A running analysis holds the current state (it asked for the review); `tracked.state` is only
        # brought up to date when the analysis ends, which may be the whole bake time later.
        live = tracked.task is not None and not tracked.task.done() and tracked.analysis is not None
        state = tracked.analysis.state if live and tracked.analysis is not None else tracked.state
        pending = tracked.rollout is not None and state.phase == "review" and state.is_for(
            revision, tracked.identity.pod_template_hash or "")
        problem = None
        if approval != "rollback":
            problem = f"{APPROVE_ANNOTATION}={approval!r} is not understood (use 'rollback')"
        elif wanted is not None and wanted != str(revision):
            problem = f"approval is for revision {wanted}, but the Deployment is at revision {revision}: ignored"
        elif not pending:
            problem = f"no review is pending for revision {revision}: approval ignored"
        await self._clear_approval(key)
        if problem is not None or tracked.rollout is None:
            log.warning("approval ignored", namespace=key[0], deployment=key[1], problem=problem)
            await self._events.record(deployment, type_="Warning", reason="ApprovalIgnored", message=str(problem))
            return
        rollout = tracked.rollout
        await self._stop_analysis(tracked, "rollback approved")
        verdict = tracked.analysis.last_verdict if tracked.analysis and tracked.analysis.last_verdict else Verdict(
            Action.ROLLBACK, (), "rollback approved by a human after review")
        verdict = Verdict(Action.ROLLBACK, verdict.deciding, verdict.reason)
        tracked.state = await self._actions.rollback(rollout, verdict, tracked.state,
                                                     approved_by=f"annotation {APPROVE_ANNOTATION}")

    async def _clear_approval(self, key: Key) -> None:
        try:
            await self._kube.patch(api_path("apps/v1", "deployments", key[0], key[1]),
                                   {"metadata": {"annotations": {APPROVE_ANNOTATION: None,
                                                                 APPROVE_REVISION_ANNOTATION: None}}},
                                   content_type=MERGE_PATCH)
        except KubeError as exc:
            log.warning("could not clear the approval annotation", namespace=key[0], deployment=key[1],
                        error=str(exc))
