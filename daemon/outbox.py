"""The durable outbox: an announcement is kept in the state annotation until it is delivered.

The notification pipeline delivers from memory, retrying for minutes. A daemon killed meanwhile (or a
leader that loses its lease) used to lose what it still had to say — and when a newer deploy then
replaced the rollout, no successor knew that anything was owed. So:

1. `Decisions` saves each announcement as an `Owed` entry with its decision, before the alert is
   submitted (`add`): whatever ends the process afterwards, the entry is there;
2. once the alert settles — delivered, or given up on and counted — the entry goes: by the decider's
   next save when that is within a few seconds (`delivered`, then `prune` at every save), else by
   `watch`, which waits in the background and removes it from the Deployment's annotation (`_flush`,
   a read-modify-write with a resourceVersion precondition, through the one writer);
3. a newer rollout's state carries the entries on (`AnalysisState.for_new_rollout`);
4. a successor — a restarted daemon, or a replica that became leader — re-sends every entry it finds
   on first sight (`resend`). PagerDuty's dedup key makes a repeated page one incident; the message
   says that it was sent again.

The cost: a Slack message or page may arrive twice after a crash. Never: not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol

import structlog

from daemon.approval import approve_command, deny_command
from daemon.kube.client import KubeApiError, KubeClient, KubeError, api_path
from daemon.kube.owed import Owed, with_entry
from daemon.kube.state import AnalysisState, StateError, read_state
from daemon.notify.model import Alert, AlertKind, rollout_key_for
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.outbox")

SETTLE_TIMEOUT = 3600.0
"""Seconds a watcher waits for an alert to settle (the pipeline gives up long before: its deadline)."""
REMEMBERED = 10_000
"""Settled announcements remembered, so that every later save drops them."""
FLUSH_ATTEMPTS = 3


class Settling(Protocol):
    def submit(self, alert: Alert) -> bool: ...

    async def settled(self, alert: Alert, *, timeout: float) -> bool: ...


Key = tuple[str, str, int, str, str, str | None]
"""Namespace, Deployment, and the entry's own key."""


def entry_for(alert: Alert, *, approve: bool) -> Owed:
    return Owed(kind=alert.kind.value, revision=alert.revision, hash=alert.pod_template_hash, at=alert.at,
                title=alert.title, summary=alert.summary, rule=alert.rule, action=alert.action, approve=approve)


def _key(alert: Alert) -> tuple[int, str, str, str | None]:
    """The `Owed.key` of the entry that stands for `alert`."""
    return (alert.revision, alert.pod_template_hash, alert.kind.value, alert.rule)


def alert_for(namespace: str, name: str, entry: Owed, *, policy: str | None) -> Alert:
    """The alert an entry stands for, as a successor re-sends it."""
    decided = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.at))
    approve = (f"{approve_command(namespace, name, entry.revision)}\nTo close the review without rolling back: "
               f"{deny_command(namespace, name, entry.revision)}") if entry.approve else None
    return Alert(kind=AlertKind(entry.kind), namespace=namespace, deployment=name, revision=entry.revision,
                 pod_template_hash=entry.hash, rollout_key=rollout_key_for(namespace, name, entry.revision),
                 title=entry.title, summary=entry.summary, rule=entry.rule, action=entry.action,
                 evidence=(f"Sent again: rollguard decided this at {decided} and restarted (or changed leader) "
                           "before it was delivered. The Deployment's Events hold the original details.",),
                 approve_command=approve, at=entry.at, policy=policy)


class Outbox:
    """Keeps undelivered announcements in the state annotation until they settle (module docstring)."""

    def __init__(self, kube: KubeClient, writer: ClusterWriter, alerts: Settling, *,
                 settle_timeout: float = SETTLE_TIMEOUT) -> None:
        self._kube = kube
        self._writer = writer
        self._alerts = alerts
        self._settle_timeout = settle_timeout
        self._settled: OrderedDict[Key, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, namespace: str, name: str, state: AnalysisState, alert: Alert, *,
            approve: bool = False) -> AnalysisState:
        """`state` with `alert` owed (to be saved before the alert is submitted)."""
        kept, lost = with_entry(state.outbox, entry_for(alert, approve=approve))
        for old in lost:
            log.error("outbox full; an undelivered announcement is dropped", namespace=namespace, deployment=name,
                      revision=old.revision, kind=old.kind, decided_at=old.at)
        return replace(state, outbox=kept)

    def delivered(self, namespace: str, name: str, alert: Alert) -> None:
        """`alert` settled: every later save drops its entry."""
        self._settled[(namespace, name, *_key(alert))] = None
        while len(self._settled) > REMEMBERED:
            self._settled.popitem(last=False)

    def watch(self, namespace: str, name: str, alert: Alert) -> None:
        """Clear `alert`'s entry from the stored state once it settles (a background task)."""
        task = asyncio.create_task(self._settle(namespace, name, alert),
                                   name=f"outbox:{namespace}/{name}:{alert.kind.value}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def prune(self, namespace: str, name: str, state: AnalysisState) -> AnalysisState:
        """`state` without the entries known to have settled."""
        if not state.outbox:
            return state
        kept = tuple(e for e in state.outbox if (namespace, name, *e.key) not in self._settled)
        return state if len(kept) == len(state.outbox) else replace(state, outbox=kept)

    def resend(self, namespace: str, name: str, state: AnalysisState, *, policy: str | None) -> None:
        """Send again every entry `state` holds (a successor's first sight of the Deployment)."""
        if not self._writer.leading():
            return
        for entry in state.outbox:
            if (namespace, name, *entry.key) in self._settled:
                continue
            alert = alert_for(namespace, name, entry, policy=policy)
            log.warning("re-sending an announcement that was not delivered", namespace=namespace, deployment=name,
                        revision=entry.revision, kind=entry.kind, decided_at=entry.at)
            self._alerts.submit(alert)
            self.watch(namespace, name, alert)

    async def drain(self) -> None:
        """Wait for every watcher (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _settle(self, namespace: str, name: str, alert: Alert) -> None:
        if not await self._alerts.settled(alert, timeout=self._settle_timeout):
            return  # not delivered (shut down first): the entry stays for a successor
        self.delivered(namespace, name, alert)
        try:
            await self._flush(namespace, name)
        except (KubeError, NotWriting, StateError) as exc:
            # A later save drops the entry anyway; at worst a successor sends it once more.
            log.info("could not clear a delivered announcement from the outbox", namespace=namespace,
                     deployment=name, kind=alert.kind.value, error=str(exc))
        except Exception as exc:  # e.g. the client closed at shutdown: the same harmless outcome, logged
            log.warning("could not clear a delivered announcement from the outbox", namespace=namespace,
                        deployment=name, kind=alert.kind.value, error=f"{type(exc).__name__}: {exc}")

    async def _flush(self, namespace: str, name: str) -> None:
        """Remove settled entries from the stored state, without overwriting a concurrent save."""
        for _ in range(FLUSH_ATTEMPTS):
            if not self._writer.may_write():
                return
            deployment = await self._kube.get(api_path("apps/v1", "deployments", namespace, name))
            state = read_state(deployment)
            pruned = self.prune(namespace, name, state)
            if pruned is state:
                return
            version = str((deployment.get("metadata") or {}).get("resourceVersion") or "")
            try:
                await self._writer.save_state(namespace, name, pruned, resource_version=version)
                return
            except KubeApiError as exc:
                if exc.code != 409:
                    raise
        log.info("the outbox entry stays until the next save: the Deployment kept changing",
                 namespace=namespace, deployment=name)
