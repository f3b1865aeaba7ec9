"""Acting and telling: every decision goes through `Actions._decide`, which logs it, records a
Kubernetes Event on the Deployment, stores the state annotation and hands the notifier its alert.

Only this module writes to the cluster on behalf of a verdict. The order inside a rollback is
deliberate: the undo is written first, and only then the Event, the annotation and the alert, so
neither a slow API write of the audit trail nor a failing notifier can delay the rollback itself
(notifications are queued without waiting: `AlertSink.submit` never blocks).

Safety rails:
* fencing — the undo re-reads the Deployment and only proceeds while it still runs the analysed
  revision and template (`kube.rollback.undo`);
* a cap on rollbacks per Deployment per window (default 3 per hour) — past it, a human decides;
* dry-run — decide and notify ("would roll back"), write nothing at all;
* leadership — with leader election, a replica that is not the leader never writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from daemon.analysis import Rollout
from daemon.clock import Clock
from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.jobs import job_manifest, run_job
from daemon.kube.rollback import Fence, RollbackFenced, UndoRefused, undo
from daemon.kube.state import ROLLGUARD_PREFIX, STATE_ANNOTATION, AnalysisState, write_state
from daemon.metrics import Metrics
from daemon.notify.model import Alert, AlertKind, rollout_key_for
from daemon.rules.evaluate import RuleResult, Verdict
from daemon.rules.model import Action

log = structlog.get_logger("rollguard.actions")


class RollbackListener(Protocol):
    """Told before an undo is written (so the rollout it causes is recognised as a rollback, even if its
    watch event arrives before the PATCH response) and when an intended undo did not happen."""

    def rollback_intended(self, rollout: Rollout) -> None: ...

    def rollback_abandoned(self, rollout: Rollout) -> None: ...


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


def approve_command(namespace: str, name: str) -> str:
    return f"rollguard approve {namespace}/{name}    (or: kubectl annotate deployment/{name} -n {namespace} " \
           f"rollguard.io/approve=rollback)"


class Actions:
    """The decider: rollback / review / notify / pass, each logged, recorded, stored and announced."""

    def __init__(self, kube: KubeClient, alerts: AlertSink, *, clock: Clock, events: EventRecorder,
                 settings: ActionSettings | None = None, metrics: Metrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True,
                 listener: RollbackListener | None = None) -> None:
        self._kube = kube
        self._alerts = alerts
        self._clock = clock
        self._events = events
        self.settings = settings or ActionSettings()
        self._metrics = metrics
        self._is_leader = is_leader
        self.listener = listener

    # ----- the one decision helper -----

    async def _decide(self, rollout: Rollout, state: AnalysisState, *, kind: AlertKind, event_reason: str,
                      event_type: str, title: str, summary: str, phase: str | None = None,
                      verdict: Verdict | None = None, deciding: tuple[RuleResult, ...] = (),
                      approve: bool = False, evidence: tuple[str, ...] = ()) -> AnalysisState:
        now = self._clock.now()
        rule = deciding[0] if deciding else None
        if phase is not None:
            decision = dict(state.decision or {})
            decision.update({"action": kind.value, "rule": rule.rule if rule else None, "at": now,
                             "reason": summary[:500]})
            state = replace(state, phase=phase, decision=decision)
        log.info("decision", namespace=rollout.id.namespace, deployment=rollout.id.name,
                 revision=rollout.id.revision, kind=kind.value, reason=event_reason, summary=summary,
                 rule=rule.rule if rule else None, dry_run=self.settings.dry_run)
        if self._may_write():
            await self._events.record(self._event_object(rollout), type_=event_type, reason=event_reason,
                                      message=f"{title}: {summary}")
            if phase is not None:
                await self.save(rollout, state)
        values: dict[str, float | bool | None] = {}
        baselines: dict[str, float | bool | None] = {}
        for result in deciding:
            values.update(result.values)
            baselines.update(result.baselines)
        # The rules' own lines first, then what the providers quoted (log lines, failed checks).
        evidence = tuple(r.message for r in deciding) + evidence
        self._alerts.submit(Alert(
            kind=kind, namespace=rollout.id.namespace, deployment=rollout.id.name, revision=rollout.id.revision,
            pod_template_hash=rollout.hash, rollout_key=rollout_key_for(rollout.id.namespace, rollout.id.name,
                                                                        rollout.id.revision),
            title=title, summary=summary, rule=rule.rule if rule else None,
            action=rule.action.value if rule else None, values=values, baselines=baselines, evidence=evidence,
            approve_command=approve_command(rollout.id.namespace, rollout.id.name) if approve else None,
            dry_run=self.settings.dry_run, at=now, policy=rollout.policy.name))
        return state

    def _may_write(self) -> bool:
        return not self.settings.dry_run and self._is_leader()

    @staticmethod
    def _event_object(rollout: Rollout) -> dict[str, object]:
        return {"kind": "Deployment", "apiVersion": "apps/v1",
                "metadata": {"namespace": rollout.id.namespace, "name": rollout.id.name, "uid": rollout.uid}}

    async def save(self, rollout: Rollout, state: AnalysisState) -> None:
        """Store the state annotation (never in dry-run or as a follower); failures are logged."""
        if not self._may_write():
            return
        try:
            await write_state(self._kube, rollout.id.namespace, rollout.id.name, state)
        except KubeError as exc:
            log.warning("could not store analysis state", namespace=rollout.id.namespace,
                        deployment=rollout.id.name, error=str(exc))

    # ----- lifecycle alerts -----

    async def started(self, rollout: Rollout, state: AnalysisState, *, note: str = "") -> AnalysisState:
        image = ", ".join(rollout.images) or "(see the Deployment)"
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_STARTED, event_reason="AnalysisStarted", event_type="Normal",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} started",
            summary=(f"Policy {rollout.policy.name} analyses it; image {image}." + (f" {note}" if note else "")),
            phase="analysing")

    async def passed(self, rollout: Rollout, verdict: Verdict | None, state: AnalysisState) -> AnalysisState:
        bake = rollout.policy.analysis.bake_time
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_COMPLETE, event_reason="AnalysisPassed", event_type="Normal",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} passed",
            summary=f"Complete, and no rule fired during the {bake:g}s bake time.", phase="passed", verdict=verdict)

    async def notify(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                     evidence: tuple[str, ...] = ()) -> AnalysisState:
        deciding = tuple(r for r in verdict.rules if r.action is Action.NOTIFY)
        return await self._decide(
            rollout, state, kind=AlertKind.NOTIFY_MATCHED, event_reason="RuleMatched", event_type="Normal",
            title=f"{rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}: rule matched",
            summary="; ".join(r.message for r in deciding) or verdict.reason, verdict=verdict, deciding=deciding,
            phase=state.phase, evidence=evidence)

    async def review(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                     why: str | None = None, evidence: tuple[str, ...] = ()) -> AnalysisState:
        deciding = verdict.deciding or tuple(r for r in verdict.rules if r.action is not Action.PASS)
        return await self._decide(
            rollout, state, kind=AlertKind.REVIEW_NEEDED, event_reason="ReviewRequested", event_type="Warning",
            title=f"Review a rollback of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}",
            summary=(why + " " if why else "") + verdict.reason, phase="review", verdict=verdict, deciding=deciding,
            approve=True, evidence=evidence)

    async def failed(self, rollout: Rollout, state: AnalysisState, message: str) -> AnalysisState:
        """The rollout itself failed (ProgressDeadlineExceeded); what follows is the policy's `onFailure`."""
        state = await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_FAILED, event_reason="RolloutFailed", event_type="Warning",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} failed",
            summary=f"{message}. Policy {rollout.policy.name} says: {rollout.policy.on_failure.value}.",
            phase="failed")
        verdict = Verdict(rollout.policy.on_failure, (), message)
        if rollout.policy.on_failure is Action.ROLLBACK:
            return await self.rollback(rollout, verdict, state)
        if rollout.policy.on_failure is Action.REVIEW:
            return await self.review(rollout, verdict, state)
        return state

    async def rollback_completed(self, rollout: Rollout, state: AnalysisState, revision: int) -> AnalysisState:
        state = await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_COMPLETED, event_reason="RollbackCompleted", event_type="Normal",
            title=f"Rollback of {rollout.id.namespace}/{rollout.id.name} completed",
            summary=f"Revision {revision} (the previous template) is fully rolled out and available again.",
            phase="rolled-back")
        target = rollout.policy.notify.pagerduty
        if target is not None and target.resolve_on_recovery:
            await self._decide(
                rollout, state, kind=AlertKind.RECOVERED, event_reason="Recovered", event_type="Normal",
                title=f"{rollout.id.namespace}/{rollout.id.name} recovered",
                summary=f"The rollback to revision {revision} completed; the incident is resolved as the policy "
                        "says (resolveOnRecovery).")
        return state

    # ----- rollback -----

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                       approved_by: str | None = None, evidence: tuple[str, ...] = ()) -> AnalysisState:
        ns, name = rollout.id.namespace, rollout.id.name
        now = self._clock.now()
        recent = state.rollbacks_since(now - self.settings.rollback_window)
        if recent >= self.settings.max_rollbacks and approved_by is None:
            return await self.review(
                rollout, verdict, state,
                why=f"rollguard already rolled back {ns}/{name} {recent} times in the last "
                    f"{self.settings.rollback_window / 60:g} minutes (cap {self.settings.max_rollbacks}); "
                    "a human decides the next one.", evidence=evidence)
        reason = verdict.reason + (f" (approved by {approved_by})" if approved_by else "")
        deciding = verdict.deciding
        if self.settings.dry_run:
            if self._metrics:
                self._metrics.rollbacks.labels(result="dry-run").inc()
            return await self._decide(
                rollout, state, kind=AlertKind.ROLLBACK_STARTED, event_reason="RollbackDryRun", event_type="Warning",
                title=f"Would roll back {ns}/{name} from revision {rollout.id.revision} (dry run)",
                summary=reason, phase="rolled-back", verdict=verdict, deciding=deciding, evidence=evidence)
        if not self._is_leader():
            log.warning("not the leader: leaving the rollback to the leader", namespace=ns, deployment=name)
            return state
        job = rollout.policy.on_rollback_job
        if job is not None:
            ok, message = await self._run_job(rollout, job.command, job.timeout)
            if not ok and not job.proceed_on_failure:
                if self._metrics:
                    self._metrics.rollbacks.labels(result="job-failed").inc()
                return await self._decide(
                    rollout, state, kind=AlertKind.ROLLBACK_FAILED, event_reason="RollbackJobFailed",
                    event_type="Warning", title=f"Rollback of {ns}/{name} stopped: the pre-rollback job failed",
                    summary=f"{message}. The deploy was NOT undone; a human must decide. Trigger: {reason}",
                    phase="review", verdict=verdict, deciding=deciding, approve=True, evidence=evidence)
            reason = f"{reason}; pre-rollback job: {message}"
        if self.listener is not None:
            self.listener.rollback_intended(rollout)
        started = time.perf_counter()
        # The state as it will be after the undo, written by the undo's own patch: a daemon killed right
        # after it still knows it rolled back (the annotation is written again, with the Event, below).
        remembered = state.remember_rollback(pod_template_hash=rollout.hash, revision=rollout.id.revision, at=now)
        decision = {**(state.decision or {}), "action": AlertKind.ROLLBACK_STARTED.value,
                    "rule": deciding[0].rule if deciding else None, "at": now, "reason": reason[:500]}
        landed = replace(remembered, phase="rolling-back", decision=decision)
        try:
            result = await undo(self._kube, ns, name, fence=Fence(rollout.id.revision, rollout.hash),
                                keep_prefix=ROLLGUARD_PREFIX, set_annotations={STATE_ANNOTATION: landed.to_json()})
        except RollbackFenced as exc:
            self._abandoned(rollout)
            if self._metrics:
                self._metrics.rollbacks.labels(result="fenced").inc()
            log.warning("rollback fenced", namespace=ns, deployment=name, reason=str(exc))
            await self._events.record(self._event_object(rollout), type_="Normal", reason="RollbackSkipped",
                                      message=str(exc))
            return replace(state, phase="fenced")
        except (UndoRefused, KubeError) as exc:
            self._abandoned(rollout)
            if self._metrics:
                self._metrics.rollbacks.labels(result="failed").inc()
            return await self._decide(
                rollout, state, kind=AlertKind.ROLLBACK_FAILED, event_reason="RollbackFailed", event_type="Warning",
                title=f"Rollback of {ns}/{name} failed", summary=f"{exc}. Trigger: {reason}", phase="review",
                verdict=verdict, deciding=deciding, approve=True, evidence=evidence)
        except BaseException:
            self._abandoned(rollout)
            raise
        took = time.perf_counter() - started
        if result.plan.skipped:
            self._abandoned(rollout)
        if self._metrics:
            self._metrics.rollbacks.labels(result="skipped" if result.plan.skipped else "executed").inc()
        state = remembered
        log.info("rolled back", namespace=ns, deployment=name, to_revision=result.plan.target_revision,
                 replica_set=result.plan.target_replica_set, seconds=round(took, 4))
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLBACK_STARTED, event_reason="RolledBack", event_type="Warning",
            title=f"Rolled back {ns}/{name} from revision {rollout.id.revision} to revision "
                  f"{result.plan.target_revision}",
            summary=f"{result.plan.message}. Trigger: {reason}", phase="rolling-back", verdict=verdict,
            deciding=deciding, evidence=evidence)

    def _abandoned(self, rollout: Rollout) -> None:
        if self.listener is not None:
            self.listener.rollback_abandoned(rollout)

    async def _run_job(self, rollout: Rollout, command: tuple[str, ...], timeout: float) -> tuple[bool, str]:
        ns, name = rollout.id.namespace, rollout.id.name
        try:
            rs = await self._kube.get(api_path("apps/v1", "replicasets", ns, f"{name}-{rollout.hash}"))
            manifest = job_manifest(deployment=name, revision=rollout.id.revision,
                                    template=rs["spec"]["template"], command=command, timeout=timeout)
        except (KubeError, ValueError, KeyError) as exc:
            return False, f"could not prepare the rollback job: {exc}"
        log.info("running pre-rollback job", namespace=ns, deployment=name, command=list(command))
        outcome = await run_job(self._kube, ns, manifest, timeout=timeout, clock=self._clock)
        await self._events.record(self._event_object(rollout), type_="Normal" if outcome.succeeded else "Warning",
                                  reason="RollbackJobSucceeded" if outcome.succeeded else "RollbackJobFailed",
                                  message=outcome.message)
        return outcome.succeeded, outcome.message

