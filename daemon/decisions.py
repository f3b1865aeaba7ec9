"""Deciding and telling: every decision goes through `Decisions._decide`, which logs it, records a
Kubernetes Event on the Deployment, stores the state annotation and hands the notifier its alert.
Stage changes follow the lifecycle table (`daemon.lifecycle`); writes go through the one writer
(`daemon.writer`). The rollback procedure itself is `daemon.actions.Actions`.

Announcements are submitted to the notification pipeline, which never blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from daemon.approval import approve_command, deny_command
from daemon.clock import Clock
from daemon.gitops.lookup import GitOps
from daemon.kube.client import KubeApiError, KubeClient, KubeError
from daemon.kube.state import AnalysisState, RollbackProgress
from daemon.lifecycle import Event, Stage, transition
from daemon.metrics import Metrics
from daemon.notify.model import ROUTES, Alert, AlertKind, Channel, rollout_key_for
from daemon.outbox import Outbox
from daemon.rollout import Rollout
from daemon.rules.evaluate import RuleResult, Verdict
from daemon.rules.model import Action
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.actions")


class AlertSink(Protocol):
    """Where alerts go (the notification pipeline); `submit` must never block."""

    def submit(self, alert: Alert) -> bool: ...

    def carries(self, alert: Alert) -> bool:
        """Whether any notifier would be sent `alert` (none configured: nothing to owe)."""
        ...

    async def settled(self, alert: Alert, *, timeout: float) -> bool:
        """Whether every notifier finished with `alert` within `timeout` seconds."""
        ...


ANNOUNCE_WAIT = 3.0
"""Seconds a paging announcement waits for its delivery to clear it from the durable outbox
(`daemon.outbox`) at once; one that has not settled by then is cleared when it does."""
SAVE_RETRY_DELAYS = (0.5, 1.0, 2.0)
"""Seconds between tries of a state save the API server refused for a moment (429, 5xx, unreachable):
a decision whose state is not stored is one a successor does not know about."""
QUICK_WAIT = 0.5
"""The same for a Slack-only announcement: the reconcile loop must not wait on a slow Slack."""


def pages(kind: AlertKind) -> bool:
    """Whether the default routes send this kind to PagerDuty."""
    return Channel.PAGERDUTY in ROUTES[kind]


@dataclass(frozen=True)
class ActionSettings:
    dry_run: bool = False
    """Decide and notify, write nothing."""
    max_rollbacks: int = 3
    """Rollbacks of one Deployment allowed within `rollback_window`; past it, ask for review."""
    rollback_window: float = 3600.0
    """Seconds."""
    argocd_namespace: str = "argocd"
    """Where Argo CD Applications live unless a tracking id names another namespace."""


class Decisions:
    """Announces decisions: review / notify / pass / failure / supersession, each logged, recorded, stored."""

    def __init__(self, kube: KubeClient, writer: ClusterWriter, alerts: AlertSink, *, clock: Clock,
                 settings: ActionSettings | None = None, metrics: Metrics | None = None) -> None:
        self._kube = kube
        self._writer = writer
        self._alerts = alerts
        self._clock = clock
        self.settings = settings or ActionSettings()
        self._metrics = metrics
        self.gitops = GitOps(kube, writer, argocd_namespace=self.settings.argocd_namespace)
        """The GitOps owners of Deployments (recorded by the reconciler)."""
        self.outbox = Outbox(kube, writer, alerts)
        """Announcements saved until delivered; a successor re-sends them (`resend`)."""

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
        log.info("decision", namespace=rollout.id.namespace, deployment=rollout.id.name,
                 revision=rollout.id.revision, kind=kind.value, reason=event_reason, summary=summary,
                 rule=rule.rule if rule else None, dry_run=self.settings.dry_run)
        values: dict[str, float | bool | None] = {}
        baselines: dict[str, float | bool | None] = {}
        for result in deciding:
            values.update(result.values)
            baselines.update(result.baselines)
        alert = Alert(
            kind=kind, namespace=rollout.id.namespace, deployment=rollout.id.name, revision=rollout.id.revision,
            pod_template_hash=rollout.hash, rollout_key=rollout_key_for(*rollout.key, rollout.id.revision),
            title=title, summary=summary, rule=rule.rule if rule else None,
            action=rule.action.value if rule else None, values=values, baselines=baselines,
            # The rules' own lines first, then what the providers quoted (log lines, failed checks).
            evidence=tuple(r.message for r in deciding) + evidence,
            approve_command=self._approve_text(rollout) if approve else None,
            dry_run=self.settings.dry_run, at=now, policy=rollout.policy.name)
        if once:
            state = state.with_announced(kind.value)
        # The outbox: the announcement is saved with its decision before anything is sent, so whatever
        # ends this process from here on, a successor finds it owed and sends it — even once a newer
        # rollout replaced this one. It leaves the outbox when delivered (or given up on and counted).
        durable = self._writer.may_write() and self._alerts.carries(alert)
        event_name = None
        if durable:
            entry = self.outbox.add(rollout.id.namespace, rollout.id.name, alert, approve=approve,
                                    reason=event_reason, warning=event_type == "Warning")
            event_name = entry.event_name(rollout.id.name)
            await self.save(rollout, state)
        self._alerts.submit(alert)
        await self._writer.event(self._event_object(rollout), type_=event_type, reason=event_reason,
                                 message=f"{title}: {summary}", name=event_name)
        if durable:
            # Usually delivered within moments: cleared now (only the outbox is rewritten: a newer
            # rollout may have saved its own state meanwhile). Else a watcher clears it once it settles.
            if await self._alerts.settled(alert, timeout=ANNOUNCE_WAIT if pages(kind) else QUICK_WAIT):
                self.outbox.delivered(rollout.id.namespace, rollout.id.name, alert)
                await self.outbox.flush(rollout.id.namespace, rollout.id.name)
            else:
                self.outbox.watch(rollout.id.namespace, rollout.id.name, alert)
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
        ns, name = rollout.id.namespace, rollout.id.name
        for delay in (*SAVE_RETRY_DELAYS, None):
            try:
                async with self.outbox.lock(ns, name):  # the outbox's entries, as owed at the moment of writing
                    await self._writer.save_state(ns, name, replace(state, outbox=self.outbox.entries(ns, name)))
                return
            except KubeApiError as exc:
                if delay is None or not (exc.code == 429 or exc.code >= 500):
                    log.warning("could not store analysis state", namespace=ns, deployment=name, error=str(exc))
                    return
                log.info("analysis state not stored yet; trying again", namespace=ns, deployment=name,
                         error=str(exc), retry_in=delay)
            except (KubeError, NotWriting) as exc:
                if delay is None or isinstance(exc, NotWriting):
                    log.warning("could not store analysis state", namespace=ns, deployment=name, error=str(exc))
                    return
            await self._clock.sleep(delay)

    def _count(self, result: str) -> None:
        if self._metrics:
            self._metrics.rollbacks.labels(result=result).inc()

    def _title(self, rollout: Rollout, what: str) -> str:
        return f"{what} {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision}"

    # ----- lifecycle announcements -----

    async def started(self, rollout: Rollout, state: AnalysisState, *, note: str = "",
                      analysed: bool = True) -> AnalysisState:
        """The rollout started: analysed (`AnalysisStarted`), or only followed (`RolloutFollowed`: someone
        else's undo back to an earlier revision)."""
        image = ", ".join(rollout.images) or "(see the Deployment)"
        owner = self.gitops.owner(rollout.key)
        if owner is not None:
            note = (f"{note} " if note else "") + f"Applied by {owner.describe()} ({owner.via})."
        return await self._decide(
            rollout, state, kind=AlertKind.ROLLOUT_STARTED,
            event_reason="AnalysisStarted" if analysed else "RolloutFollowed", event_type="Normal",
            title=f"Rollout of {rollout.id.namespace}/{rollout.id.name} revision {rollout.id.revision} started",
            summary=(f"Policy {rollout.policy.name} analyses it; image {image}." if analysed else f"Image {image}.")
            + (f" {note}" if note else ""),
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
