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
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from daemon.approval import approve_command, deny_command
from daemon.clock import Clock
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
from daemon.kube.state import AnalysisState, RollbackProgress
from daemon.lifecycle import Event, Stage, transition
from daemon.metrics import Metrics
from daemon.notify.model import Alert, AlertKind, rollout_key_for
from daemon.rollout import Rollout
from daemon.rules.evaluate import RuleResult, Verdict
from daemon.rules.model import Action
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.actions")


class AlertSink(Protocol):
    """Where alerts go (the notification pipeline); `submit` must never block."""

    def submit(self, alert: Alert) -> bool: ...


@dataclass(frozen=True)
class ActionSettings:
    dry_run: bool = False
    """Decide and notify, write nothing."""
    max_rollbacks: int = 3
    """Rollbacks of one Deployment allowed within `rollback_window`; past it, ask for review."""
    rollback_window: float = 3600.0
    """Seconds."""


class RollbackRegistry:
    """The rollbacks this process is carrying out, by Deployment: the rollout an undo causes is then
    recognised as rollguard's own even when its watch event arrives before the PATCH response."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Rollout] = {}

    def intended(self, bad: Rollout) -> None:
        self._by_key[bad.key] = bad

    def abandoned(self, bad: Rollout) -> None:
        if self._by_key.get(bad.key) is bad:
            del self._by_key[bad.key]

    def pop(self, key: tuple[str, str]) -> Rollout | None:
        return self._by_key.pop(key, None)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by_key


class Actions:
    """The decider: rollback / review / notify / pass, each logged, recorded, stored and announced."""

    def __init__(self, kube: KubeClient, writer: ClusterWriter, alerts: AlertSink, *, clock: Clock,
                 registry: RollbackRegistry, settings: ActionSettings | None = None,
                 metrics: Metrics | None = None) -> None:
        self._kube = kube
        self._writer = writer
        self._alerts = alerts
        self._clock = clock
        self._registry = registry
        self.settings = settings or ActionSettings()
        self._metrics = metrics

    # ----- the one decision helper -----

    async def _decide(self, rollout: Rollout, state: AnalysisState, *, kind: AlertKind, event_reason: str,
                      event_type: str, title: str, summary: str, stage: Stage | str | None = None,
                      deciding: tuple[RuleResult, ...] = (), approve: bool = False,
                      evidence: tuple[str, ...] = (), once: bool = True) -> AnalysisState:
        """Announce a decision: log, alert, Event, state annotation. With `once`, an announcement the
        state records as made is not made again (a restart re-runs only what was not announced)."""
        now = self._clock.now()
        if once and state.was_announced(kind.value):
            log.info("already announced", namespace=rollout.id.namespace, deployment=rollout.id.name,
                     revision=rollout.id.revision, kind=kind.value)
            if stage is not None and state.phase != stage:
                state = replace(state, phase=str(stage))
                await self.save(rollout, state)
            return state
        rule = deciding[0] if deciding else None
        if stage is not None:
            decision = dict(state.decision or {})
            decision.update({"action": kind.value, "rule": rule.rule if rule else None, "at": now,
                             "reason": summary[:500]})
            state = replace(state, phase=str(stage), decision=decision)
        if once:
            state = state.with_announced(kind.value)
        log.info("decision", namespace=rollout.id.namespace, deployment=rollout.id.name,
                 revision=rollout.id.revision, kind=kind.value, reason=event_reason, summary=summary,
                 rule=rule.rule if rule else None, dry_run=self.settings.dry_run)
        values: dict[str, float | bool | None] = {}
        baselines: dict[str, float | bool | None] = {}
        for result in deciding:
            values.update(result.values)
            baselines.update(result.baselines)
        self._alerts.submit(Alert(
            kind=kind, namespace=rollout.id.namespace, deployment=rollout.id.name, revision=rollout.id.revision,
            pod_template_hash=rollout.hash, rollout_key=rollout_key_for(*rollout.key, rollout.id.revision),
            title=title, summary=summary, rule=rule.rule if rule else None,
            action=rule.action.value if rule else None, values=values, baselines=baselines,
            # The rules' own lines first, then what the providers quoted (log lines, failed checks).
            evidence=tuple(r.message for r in deciding) + evidence,
            approve_command=self._approve_text(rollout) if approve else None,
            dry_run=self.settings.dry_run, at=now, policy=rollout.policy.name))
        await self._writer.event(self._event_object(rollout), type_=event_type, reason=event_reason,
                                 message=f"{title}: {summary}")
        if stage is not None or once:
            await self.save(rollout, state)
        return state

    @staticmethod
    def _approve_text(rollout: Rollout) -> str:
        revision = rollout.id.revision
        return (f"{approve_command(*rollout.key, revision)}\n"
                f"To close the review without rolling back: {deny_command(*rollout.key, revision)}")

    @staticmethod
    def _event_object(rollout: Rollout) -> dict[str, object]:
        return {"kind": "Deployment", "apiVersion": "apps/v1",
                "metadata": {"namespace": rollout.id.namespace, "name": rollout.id.name, "uid": rollout.uid}}

    async def save(self, rollout: Rollout, state: AnalysisState) -> None:
        """Store the state annotation (never in dry-run or as a follower); failures are logged."""
        if not self._writer.may_write():
            return
        try:
            await self._writer.save_state(rollout.id.namespace, rollout.id.name, state)
        except (KubeError, NotWriting) as exc:
            log.warning("could not store analysis state", namespace=rollout.id.namespace,
                        deployment=rollout.id.name, error=str(exc))

    def _count(self, result: str) -> None:
        if self._metrics:
            self._metrics.rollbacks.labels(result=result).inc()

    def _title(self, rollout: Rollout, what: str) -> str:
        return f"{what} {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}"

    # ----- lifecycle announcements -----

    async def started(self, rollout: Rollout, state: AnalysisState, *, note: str = "") -> AnalysisState:
        image = ", ".join(rollout.images) or "(see the Deployment)"
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_STARTED, event_reason="AnalysisStarted", event_type="Normal",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} started",
            summary=f"Policy {rollout.policy.name} analyses it; image {image}." + (f" {note}" if note else ""),
            stage=state.phase if state.phase in (Stage.ANALYSING, Stage.REVIEW) else Stage.ANALYSING)

    async def passed(self, rollout: Rollout, verdict: Verdict | None, state: AnalysisState) -> AnalysisState:
        row = transition(state.phase, Event.BAKE_OVER)
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_COMPLETE, event_reason="AnalysisPassed", event_type="Normal",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} passed",
            summary=f"Complete, and no rule fired during the {rollout.policy.analysis.bake_time:g}s bake time.",
            stage=row.target)

    async def notify(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                     evidence: tuple[str, ...] = ()) -> AnalysisState:
        deciding = tuple(r for r in verdict.rules if r.action is Action.NOTIFY)
        return await self._decide(
            rollout, state, kind=AlertKind.NOTIFY_MATCHED, event_reason="RuleMatched", event_type="Normal",
            title=f"{rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}: rule matched",
            summary="; ".join(r.message for r in deciding) or verdict.reason, deciding=deciding,
            evidence=evidence, once=False)

    async def review(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *, event: Event,
                     why: str | None = None, evidence: tuple[str, ...] = ()) -> AnalysisState:
        row = transition(state.phase, event)
        deciding = verdict.deciding or tuple(r for r in verdict.rules if r.action is not Action.PASS)
        return await self._decide(
            rollout, state, kind=AlertKind.REVIEW_NEEDED, event_reason="ReviewRequested", event_type="Warning",
            title=f"Review a rollback of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}",
            summary=(why + " " if why else "") + verdict.reason, stage=row.target, deciding=deciding,
            approve=True, evidence=evidence)

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

    async def superseded(self, rollout: Rollout, state: AnalysisState, newer: int) -> AnalysisState:
        return await self._decide(
            rollout, state, kind=AlertKind.SUPERSEDED, event_reason="AnalysisSuperseded", event_type="Normal",
            title=self._title(rollout, "Superseded:"),
            summary=f"Revision {newer} started before this revision's analysis reached a verdict; it is no "
                    "longer judged.", stage=transition(state.phase, Event.NEWER_ROLLOUT).target)

    async def denied(self, rollout: Rollout, state: AnalysisState, approver: str) -> AnalysisState:
        return await self._decide(
            rollout, state, kind=AlertKind.REVIEW_CLOSED, event_reason="RollbackDenied", event_type="Normal",
            title=self._title(rollout, "Rollback denied for"),
            summary=f"{approver} denied the rollback; the revision stays and rollguard stops judging it.",
            stage=transition(state.phase, Event.DENIED).target)

    async def analysis_error(self, rollout: Rollout, state: AnalysisState, error: str, *,
                             restarting: bool) -> AnalysisState:
        """The analysis task itself failed (a bug, not a measurement): announced, then restarted."""
        return await self._decide(
            rollout, state, kind=AlertKind.ANALYSIS_ERROR, event_reason="AnalysisError", event_type="Warning",
            title=self._title(rollout, "rollguard's analysis failed for"),
            summary=f"{error}. " + ("It is restarted from its saved state." if restarting else
                                    "It was restarted too often; a human must judge this revision."),
            once=not restarting)

    async def rollback_completed(self, rollout: Rollout, state: AnalysisState, revision: int) -> AnalysisState:
        state = replace(state, rollback=replace(state.rollback or RollbackProgress("following"), step="done"))
        state = await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_COMPLETED, event_reason="RollbackCompleted", event_type="Normal",
            title=f"Rollback of {rollout.id.namespace}/{rollout.id.name} completed",
            summary=f"Revision {revision} (the previous template) is fully rolled out and available again.",
            stage=transition(state.phase, Event.ROLLBACK_COMPLETE).target)
        target = rollout.policy.notify.pagerduty
        if target is not None and target.resolve_on_recovery:
            state = await self._decide(
                rollout, state, kind=AlertKind.RECOVERED, event_reason="Recovered", event_type="Normal",
                title=f"{rollout.id.namespace}/{rollout.id.name} recovered",
                summary=f"The rollback to revision {revision} completed; the incident is resolved as the policy "
                        "says (resolveOnRecovery).")
        return state

    async def rollback_rollout_failed(self, rollout: Rollout, state: AnalysisState, message: str) -> AnalysisState:
        """The rollback's own rollout failed: the service may be down — page (critical)."""
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_FAILED, event_reason="RollbackRolloutFailed",
            event_type="Warning", title=f"The rollback of {rollout.id.namespace}/{rollout.id.name} is not coming up",
            summary=f"rollguard rolled back revision {rollout.id.revision}, but the previous revision's rollout "
                    f"failed too: {message}. The service may be down; a human must act now.",
            stage=transition(state.phase, Event.ROLLBACK_ROLLOUT_FAILED).target)

    # ----- rollback -----

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                       event: Event = Event.ROLLBACK_RULE, approved_by: str | None = None,
                       evidence: tuple[str, ...] = ()) -> AnalysisState:
        """Carry out (or resume) the rollback of `rollout`; returns the state it ended in."""
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
            return await self._decide(
                rollout, state, kind=AlertKind.ROLLBACK_STARTED, event_reason="RollbackDryRun", event_type="Warning",
                title=f"Would roll back {ns}/{name} from revision {rollout.id.revision} (dry run)",
                summary=reason, stage=Stage.ROLLED_BACK, deciding=deciding, evidence=evidence)
        if not self._writer.may_write():
            log.warning("not the leader: leaving the rollback to the leader", namespace=ns, deployment=name)
            return state
        if not resuming:
            state = replace(state, phase=str(transition(state.phase, event).target),
                            rollback=RollbackProgress("undo", reason=reason[:500], at=now, approved_by=approved_by))
        fence = Fence(rollout.id.revision, rollout.hash)
        failed = await self._plan(rollout, state, fence, verdict, evidence)
        if failed is not None:
            return failed
        job = rollout.policy.on_rollback_job
        assert state.rollback is not None
        if job is not None and (state.rollback.step == "job" or state.rollback.job is None):
            state, failed = await self._run_job(rollout, state, fence, verdict, evidence)
            if failed is not None:
                return failed
        return await self._undo(rollout, state, fence, verdict, evidence)

    async def _plan(self, rollout: Rollout, state: AnalysisState, fence: Fence, verdict: Verdict,
                    evidence: tuple[str, ...]) -> AnalysisState | None:
        """Step 1: the analysed revision is live and a target exists; else the announced failure state."""
        ns, name = rollout.key
        try:
            deployment, replica_sets = await read_for_undo(self._kube, ns, name)
            check_fence(ns, name, deployment, replica_sets, fence)
            plan_undo(deployment, replica_sets)
        except RollbackFenced as exc:
            return await self._fenced(rollout, state, exc, verdict, evidence)
        except (UndoRefused, KubeError) as exc:
            return await self._failed(rollout, state, Event.UNDO_REFUSED, str(exc), verdict, evidence)
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
                    evidence: tuple[str, ...]) -> AnalysisState:
        """Step 3 and 4: the fenced undo (state in the same patch), then its announcement."""
        ns, name = rollout.key
        progress = state.rollback
        assert progress is not None
        self._registry.intended(rollout)
        started = time.perf_counter()
        landed = state.remember_rollback(pod_template_hash=rollout.hash, revision=rollout.id.revision,
                                         at=progress.at)
        landed = replace(landed, rollback=replace(progress, step="following"))
        try:
            result = await self._writer.undo(ns, name, fence=fence, state=landed)
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
                                            target=result.plan.target_revision, message=result.plan.message)

    async def announce_rollback(self, rollout: Rollout, state: AnalysisState, deciding: tuple[RuleResult, ...] = (),
                                evidence: tuple[str, ...] = (), *, target: int | None,
                                message: str = "") -> AnalysisState:
        """The `rollback_started` announcement (also re-sent after a restart if the state lacks it)."""
        ns, name = rollout.key
        reason = state.rollback.reason if state.rollback else ""
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
