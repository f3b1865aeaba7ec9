"""Acting and telling: every decision goes through `Actions._decide`, which logs it, records a
Kubernetes Event, stores the state annotation and hands the notifier its alert. Stage changes follow
the lifecycle table (`daemon.lifecycle`); writes go through the one writer (`daemon.writer`).

A rollback is a sequence of persisted steps, so that a crash or a handover between any two of them
repeats nothing and drops nothing:

1. plan — read the Deployment and its ReplicaSets; the analysed revision must still be live
   (else: fenced, announced), a target revision must exist (else: rollback failed, announced — and
   no Job ever ran), and this replica must lead;
2. job (optional) — the state says `rollback.step=job` with the Job's name before the Job is created;
   the name is derived from the Deployment, revision and template, so a second attempt adopts it;
3. undo — fenced; a write by someone else between read and patch is retried over, only a newer
   revision fences; the state (`rollback.step=following`) is written by the undo's own patch;
4. announce — `rollback_started` is sent and recorded in `announced`; a restart re-sends what the
   state does not record as announced (PagerDuty dedup keys make repeats one incident).

Announcements are submitted to the notification pipeline, which never blocks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.decisions import ActionSettings, AlertSink, Decisions
from daemon.gitops.lookup import OwnerFacts, rollback_note
from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.jobs import job_manifest, job_name
from daemon.kube.rollback import (
    Fence,
    RollbackContended,
    RollbackFenced,
    UndoRefused,
    check_fence,
    plan_undo,
    read_for_undo,
)
from daemon.kube.state import AnalysisState, RollbackProgress, StateError, read_state
from daemon.lifecycle import Event, Stage, transition
from daemon.metrics import Metrics
from daemon.notify.model import AlertKind
from daemon.rollout import Rollout
from daemon.rules.evaluate import RuleResult, Verdict
from daemon.rules.model import Action, GitOpsMode
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.actions")

__all__ = ["ActionSettings", "Actions", "AlertSink", "RollbackRegistry"]


class RollbackRegistry:
    """The rollbacks this process is carrying out, by Deployment: the rollout an undo causes is then
    recognised as rollguard's own even when its watch event arrives before the PATCH response."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Rollout] = {}
        self._acting: dict[tuple[str, str], Rollout] = {}

    def acting_on(self, rollout: Rollout) -> bool:
        """Whether a rollback of `rollout` is in progress here (planned, its Job running, or its undo
        being written): a newer rollout must not cancel it — its fence decides. An older rollout's
        rollback, still running its Job while newer deploys come and go, is not `rollout`'s."""
        bad = self._acting.get(rollout.key)
        return bad is not None and bad.id.pod_template_hash == rollout.id.pod_template_hash

    def begin(self, bad: Rollout) -> None:
        self._acting[bad.key] = bad

    def end(self, bad: Rollout) -> None:
        if self._acting.get(bad.key) is bad:
            del self._acting[bad.key]

    def intended(self, bad: Rollout) -> None:
        self._by_key[bad.key] = bad

    def abandoned(self, bad: Rollout) -> None:
        if self._by_key.get(bad.key) is bad:
            del self._by_key[bad.key]

    def pop(self, key: tuple[str, str]) -> Rollout | None:
        return self._by_key.pop(key, None)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by_key


class Actions(Decisions):
    """The decider: rollback / review / notify / pass, each logged, recorded, stored and announced."""

    def __init__(self, kube: KubeClient, writer: ClusterWriter, alerts: AlertSink, *, clock: Clock,
                 registry: RollbackRegistry, settings: ActionSettings | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__(kube, writer, alerts, clock=clock, settings=settings, metrics=metrics)
        self._registry = registry

    # ----- rollback -----

    async def failed(self, rollout: Rollout, state: AnalysisState, message: str) -> AnalysisState:
        """The rollout itself failed (ProgressDeadlineExceeded); what follows is the policy's `onFailure`."""
        on_failure = rollout.policy.on_failure
        state = await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_FAILED, event_reason="RolloutFailed", event_type="Warning",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} failed",
            summary=f"{message}. Policy {rollout.policy.name} says: {on_failure.value}.",
            stage=transition(state.phase, Event.DEADLINE).target if state.phase != Stage.FAILED else Stage.FAILED)
        verdict = Verdict(on_failure, (), message)
        if on_failure is Action.ROLLBACK:
            return await self.rollback(rollout, verdict, state, event=Event.ON_FAILURE_ROLLBACK)
        if on_failure is Action.REVIEW:
            return await self.review(rollout, verdict, state, event=Event.ON_FAILURE_REVIEW)
        return state

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                       event: Event = Event.ROLLBACK_RULE, approved_by: str | None = None,
                       evidence: tuple[str, ...] = ()) -> AnalysisState:
        """Carry out (or resume) the rollback of `rollout`; returns the state it ended in."""
        self._registry.begin(rollout)
        try:
            return await self._rollback(rollout, verdict, state, event=event, approved_by=approved_by,
                                        evidence=evidence)
        finally:
            self._registry.end(rollout)

    async def _rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *, event: Event,
                        approved_by: str | None, evidence: tuple[str, ...]) -> AnalysisState:
        ns, name = rollout.key
        now = self._clock.now()
        resuming = state.phase == Stage.ROLLING_BACK and state.rollback is not None
        reason = state.rollback.reason if resuming and state.rollback else (
            verdict.reason + (f" (approved by {approved_by})" if approved_by else ""))
        deciding = verdict.deciding
        if not resuming:
            recent = state.rollbacks_since(now - self.settings.rollback_window)
            if recent >= self.settings.max_rollbacks and approved_by is None:
                state = replace(state, phase=str(transition(state.phase, event).target))
                return await self.review(
                    rollout, verdict, state, event=Event.CAP_REACHED, evidence=evidence,
                    why=f"rollguard already rolled back {ns}/{name} {recent} times in the last "
                        f"{self.settings.rollback_window / 60:g} minutes (cap {self.settings.max_rollbacks}); "
                        "a human decides the next one.")
        if self.settings.dry_run:
            self._count("dry-run")
            # Remembered (in memory: nothing is written) as the undo would be, so that this template
            # applied again is reviewed and the rollback cap counts, as they would be for real.
            state = state.remember_rollback(pod_template_hash=rollout.hash, revision=rollout.id.revision, at=now)
            return await self._decide(
                rollout, state, kind=AlertKind.ROLLBACK_STARTED, event_reason="RollbackDryRun", event_type="Warning",
                title=f"Would roll back {ns}/{name} from revision {rollout.id.revision} (dry run)",
                summary=reason, stage=Stage.ROLLED_BACK, deciding=deciding, evidence=evidence)
        if not self._writer.may_write():
            log.warning("not the leader: leaving the rollback to the leader", namespace=ns, deployment=name)
            return state
        owner = await self.gitops.read(rollout.key)
        if owner is not None and not resuming and rollout.policy.gitops is GitOpsMode.PAGE and approved_by is None:
            state = replace(state, phase=str(transition(state.phase, event).target))
            return await self.review(
                rollout, verdict, state, event=Event.CAP_REACHED, evidence=evidence,
                why=f"Not rolled back: {owner.owner.describe()} would re-apply it (policy gitops: page). Revert "
                    f"{owner.revision_text()}; or approve below to suspend its sync and roll back.")
        if not resuming:
            state = replace(state, phase=str(transition(state.phase, event).target),
                            rollback=RollbackProgress("undo", reason=reason[:500], at=now, approved_by=approved_by))
        fence = Fence(rollout.id.revision, rollout.hash)
        planned = await self._plan(rollout, state, fence, verdict, evidence)
        if isinstance(planned, AnalysisState):
            return planned
        assert state.rollback is not None
        # The target is known from the plan: recorded before any effect, so an announcement re-sent
        # after a crash says the same as the first one would have.
        state = replace(state, rollback=replace(state.rollback, target=planned))
        job = rollout.policy.on_rollback_job
        assert state.rollback is not None
        if job is not None and (state.rollback.step == "job" or state.rollback.job is None):
            state, failed = await self._run_job(rollout, state, fence, verdict, evidence)
            if failed is not None:
                return failed
        note = await self._before_undo(rollout, owner) if owner is not None else ""
        return await self._undo(rollout, state, fence, verdict, evidence, note=note)

    async def _before_undo(self, rollout: Rollout, owner: OwnerFacts) -> str:
        """Suspend the GitOps owner when the policy says so (or a human approved a `page`); the sentence
        the rollback's page carries: what the SRE does next."""
        problem = "" if rollout.policy.gitops is GitOpsMode.UNDO else await self.gitops.suspend(owner)
        return rollback_note(owner, rollout.policy.gitops, rollout.key, problem)

    async def _plan(self, rollout: Rollout, state: AnalysisState, fence: Fence, verdict: Verdict,
                    evidence: tuple[str, ...]) -> AnalysisState | int:
        """Step 1: the analysed revision is live and a target exists (its revision is returned); else the
        announced outcome: fenced, failed — or, when a previous leader's undo already landed, that
        undo announced (a successor resuming a rollback must not call its own undo a newer deploy)."""
        ns, name = rollout.key
        try:
            deployment, replica_sets = await read_for_undo(self._kube, ns, name)
            check_fence(ns, name, deployment, replica_sets, fence)
            return plan_undo(deployment, replica_sets).target_revision
        except RollbackFenced as exc:
            landed = self._own_undo(rollout, deployment)
            if landed is not None:
                log.info("the undo already landed (a previous leader wrote it)", namespace=ns, deployment=name)
                target = landed.rollback.target if landed.rollback else None
                return await self.announce_rollback(rollout, landed, verdict.deciding, evidence, target=target)
            return await self._fenced(rollout, state, exc, verdict, evidence)
        except (UndoRefused, KubeError) as exc:
            return await self._failed(rollout, state, Event.UNDO_REFUSED, str(exc), verdict, evidence)

    def _own_undo(self, rollout: Rollout, deployment: Mapping[str, Any]) -> AnalysisState | None:
        """The state the undo's own patch left, when the live template is rollguard's undo of `rollout`."""
        try:
            landed = read_state(deployment, now=self._clock.now())
        except StateError:
            return None
        if (landed.is_for(rollout.id.revision, rollout.hash) and landed.phase == Stage.ROLLING_BACK
                and landed.rollback is not None and landed.rollback.step in ("following", "done")):
            return landed
        return None

    async def _run_job(self, rollout: Rollout, state: AnalysisState, fence: Fence, verdict: Verdict,
                       evidence: tuple[str, ...]) -> tuple[AnalysisState, AnalysisState | None]:
        """Step 2: the pre-rollback Job, created once (or adopted), its progress in the state."""
        ns, name = rollout.key
        job = rollout.policy.on_rollback_job
        assert job is not None
        assert state.rollback is not None
        jname = state.rollback.job or job_name(name, rollout.id.revision, rollout.hash)
        progress = replace(state.rollback, step="job", job=jname)
        state = replace(state, rollback=progress)
        await self.save(rollout, state)
        try:
            rs = await self._kube.get(api_path("apps/v1", "replicasets", ns, f"{name}-{rollout.hash}"))
            manifest = job_manifest(deployment=name, revision=rollout.id.revision, pod_template_hash=rollout.hash,
                                    template=rs["spec"]["template"], command=job.command, timeout=job.timeout)
            log.info("running pre-rollback job", namespace=ns, deployment=name, job=jname, command=list(job.command))
            await self._writer.ensure_job(ns, manifest)
            outcome = await self._writer.wait_job(ns, jname, deadline=progress.at + job.timeout + 30,
                                                  clock=self._clock)
            ok, message = outcome.succeeded, outcome.message
        except NotWriting as exc:
            log.warning("pre-rollback job left to the leader", namespace=ns, deployment=name, reason=str(exc))
            return state, state
        except (KubeError, ValueError, KeyError) as exc:
            ok, message = False, f"could not run the rollback job: {exc}"
        await self._writer.event(self._event_object(rollout), type_="Normal" if ok else "Warning",
                                 reason="RollbackJobSucceeded" if ok else "RollbackJobFailed", message=message)
        if not ok and not job.proceed_on_failure:
            self._count("job-failed")
            return state, await self._failed(rollout, state, Event.JOB_FAILED, f"{message}. The deploy was NOT undone",
                                             verdict, evidence)
        state = replace(state, rollback=replace(progress, step="undo",
                                                reason=f"{progress.reason}; pre-rollback job: {message}"[:500]))
        return state, None

    async def _undo(self, rollout: Rollout, state: AnalysisState, fence: Fence, verdict: Verdict,
                    evidence: tuple[str, ...], *, note: str = "") -> AnalysisState:
        """Step 3 and 4: the fenced undo (state in the same patch), then its announcement."""
        ns, name = rollout.key
        progress = state.rollback
        assert progress is not None
        self._registry.intended(rollout)
        started = time.perf_counter()
        landed = state.remember_rollback(pod_template_hash=rollout.hash, revision=rollout.id.revision,
                                         at=progress.at)
        rule = verdict.deciding[0].rule if verdict.deciding else None
        landed = replace(landed, rollback=replace(progress, step="following"), decision={
            **(state.decision or {}), "action": "rollback_started", "rule": rule, "at": progress.at,
            "reason": progress.reason[:500]})
        try:
            async with self.outbox.lock(ns, name):
                result = await self._writer.undo(ns, name, fence=fence,
                                                 state=replace(landed, outbox=self.outbox.entries(ns, name)))
        except RollbackFenced as exc:
            self._registry.abandoned(rollout)
            return await self._fenced(rollout, state, exc, verdict, evidence)
        except NotWriting as exc:
            self._registry.abandoned(rollout)
            log.warning("undo not written", namespace=ns, deployment=name, reason=str(exc))
            return state
        except (UndoRefused, RollbackContended, KubeError) as exc:
            self._registry.abandoned(rollout)
            return await self._failed(rollout, state, Event.UNDO_REFUSED, str(exc), verdict, evidence)
        except BaseException:
            self._registry.abandoned(rollout)
            raise
        if result.plan.skipped:
            self._registry.abandoned(rollout)
        self._count("skipped" if result.plan.skipped else "executed")
        log.info("rolled back", namespace=ns, deployment=name, to_revision=result.plan.target_revision,
                 replica_set=result.plan.target_replica_set, seconds=round(time.perf_counter() - started, 4))
        landed = replace(landed, rollback=replace(progress, step="following", target=result.plan.target_revision))
        return await self.announce_rollback(rollout, landed, verdict.deciding, evidence,
                                            target=result.plan.target_revision, message=result.plan.message,
                                            gitops_note=note)

    async def announce_rollback(self, rollout: Rollout, state: AnalysisState, deciding: tuple[RuleResult, ...] = (),
                                evidence: tuple[str, ...] = (), *, target: int | None,
                                message: str = "", gitops_note: str | None = None) -> AnalysisState:
        """The `rollback_started` announcement (also re-sent after a restart if the state lacks it).
        `gitops_note`: what to do about the Deployment's GitOps owner; None: re-read from the cluster (an
        undo announced after a restart says what the one that wrote it would have)."""
        ns, name = rollout.key
        if gitops_note is None:
            gitops_note = await self.gitops.note_after_undo(rollout.key, rollout.policy.gitops)
        message = ". ".join(part for part in (message, gitops_note) if part)
        reason = state.rollback.reason if state.rollback else str((state.decision or {}).get("reason") or "")
        to = f" to revision {target}" if target is not None else ""
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_STARTED, event_reason="RolledBack", event_type="Warning",
            title=f"Rolled back {ns}/{name} from revision {rollout.id.revision}{to}",
            summary=(f"{message}. " if message else "") + f"Trigger: {reason}",
            stage=Stage.ROLLING_BACK, deciding=deciding, evidence=evidence)

    async def _fenced(self, rollout: Rollout, state: AnalysisState, exc: RollbackFenced, verdict: Verdict,
                      evidence: tuple[str, ...]) -> AnalysisState:
        self._count("fenced")
        ran_job = state.rollback is not None and state.rollback.job is not None
        note = (f" The pre-rollback job {state.rollback.job} had already run: check the database against the "
                "live revision." if ran_job and state.rollback else "")
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_FAILED, event_reason="RollbackFenced", event_type="Warning",
            title=f"Rollback of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} not done: "
                  f"superseded by revision {exc.revision}",
            summary=f"{exc}. The bad revision was replaced before rollguard could undo it; revision {exc.revision} "
                    f"is live and is judged on its own.{note} Trigger: {verdict.reason}",
            stage=transition(state.phase, Event.FENCED).target, deciding=verdict.deciding, evidence=evidence)

    async def _failed(self, rollout: Rollout, state: AnalysisState, event: Event, why: str, verdict: Verdict,
                      evidence: tuple[str, ...]) -> AnalysisState:
        self._count("failed")
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_FAILED, event_reason="RollbackFailed", event_type="Warning",
            title=f"Rollback of {rollout.id.namespace}/{rollout.id.name} failed",
            summary=f"{why}. The bad revision {rollout.id.revision} is still live; a human must act. "
                    f"Trigger: {verdict.reason}",
            stage=transition(state.phase, event).target, deciding=verdict.deciding, evidence=evidence)
