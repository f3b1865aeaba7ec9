"""The durable outbox: an announcement is kept in the state annotation until it is delivered.

The notification pipeline delivers from memory, retrying for minutes. A daemon killed meanwhile (or a
leader that loses its lease) used to lose what it still had to say — and when a newer deploy then
replaced the rollout, no successor knew that anything was owed. So:

1. `Decisions` adds each announcement as an `Owed` entry (`add`) and saves it with its decision,
   before the alert is submitted: whatever ends the process afterwards, the entry is stored;
2. this process's list of entries per Deployment is the one truth: every save of the state
   annotation (`Decisions.save`, the undo's patch) writes it (`entries`), whichever rollout's flow
   saves — so a newer rollout's save, or the previous one's last word, cannot drop another's entry;
   saves of one Deployment are serialised (`lock`) so that an older body never lands last;
3. once the alert settles — delivered, or given up on and counted — the entry leaves the list
   (`delivered`); the decider's next save clears it, or `watch` does in the background (`_flush`: a
   read-modify-write with a resourceVersion precondition, through the one writer);
4. a successor — a restarted daemon, or a replica that became leader — adopts the stored entries on
   first sight and sends each again (`resend`), with its Event (the decider may have died before
   recording it). PagerDuty's dedup key makes a repeated page one incident; the message says that it
   was sent again.

The cost: a Slack message or page may arrive twice after a crash. Never: not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

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
FLUSH_ATTEMPTS = 3


class Settling(Protocol):
    def submit(self, alert: Alert) -> bool: ...

    async def settled(self, alert: Alert, *, timeout: float) -> bool: ...


Deployment = tuple[str, str]


def entry_for(alert: Alert, *, approve: bool, reason: str, warning: bool) -> Owed:
    return Owed(kind=alert.kind.value, revision=alert.revision, hash=alert.pod_template_hash, at=alert.at,
                title=alert.title, summary=alert.summary, rule=alert.rule, action=alert.action, approve=approve,
                reason=reason, warning=warning)


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
        self._owed: dict[Deployment, tuple[Owed, ...]] = {}
        self._locks: dict[Deployment, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """Held around every write of a Deployment's state annotation."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def entries(self, namespace: str, name: str) -> tuple[Owed, ...]:
        """What the Deployment's state annotation must hold now."""
        return self._owed.get((namespace, name), ())

    def add(self, namespace: str, name: str, alert: Alert, *, approve: bool = False, reason: str = "Announced",
            warning: bool = False) -> Owed:
        """Owe `alert` (save the state before submitting it); the entry."""
        entry = entry_for(alert, approve=approve, reason=reason, warning=warning)
        self._put(namespace, name, entry)
        return entry

    def _put(self, namespace: str, name: str, entry: Owed) -> None:
        kept, lost = with_entry(self.entries(namespace, name), entry)
        self._owed[(namespace, name)] = kept
        for old in lost:
            log.error("outbox full; an undelivered announcement is dropped", namespace=namespace, deployment=name,
                      revision=old.revision, kind=old.kind, decided_at=old.at)

    def delivered(self, namespace: str, name: str, alert: Alert) -> None:
        """`alert` settled: its entry goes (the next save of the state annotation drops it)."""
        key = _key(alert)
        kept = tuple(e for e in self.entries(namespace, name) if e.key != key)
        if kept:
            self._owed[(namespace, name)] = kept
        else:
            self._owed.pop((namespace, name), None)

    def watch(self, namespace: str, name: str, alert: Alert) -> None:
        """Clear `alert`'s entry from the stored state once it settles (a background task)."""
        task = asyncio.create_task(self._settle(namespace, name, alert),
                                   name=f"outbox:{namespace}/{name}:{alert.kind.value}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resend(self, deployment: Mapping[str, Any], state: AnalysisState, *, policy: str | None) -> None:
        """Adopt and send again every entry `state` (read from `deployment`) holds that this process does
        not owe already: a successor's first sight of the Deployment. Its Event is recorded again before
        this returns, so that it precedes whatever the successor decides next."""
        if not self._writer.leading() or not state.outbox:
            return
        meta = deployment.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        known = {e.key for e in self.entries(namespace, name)}
        for entry in state.outbox:
            if entry.key in known:
                continue
            self._put(namespace, name, entry)
            alert = alert_for(namespace, name, entry, policy=policy)
            log.warning("re-sending an announcement that was not delivered", namespace=namespace, deployment=name,
                        revision=entry.revision, kind=entry.kind, decided_at=entry.at)
            self._alerts.submit(alert)
            self.watch(namespace, name, alert)
            # The decider may have stopped between saving the entry and recording its Event. The Event's
            # name is the entry's own: recorded already, the API server refuses it (rollguard does not
            # read Events back), and the audit trail keeps its order.
            await self._writer.event(
                {"kind": "Deployment", "apiVersion": "apps/v1",
                 "metadata": {"namespace": namespace, "name": name, "uid": meta.get("uid")}},
                type_="Warning" if entry.warning else "Normal", reason=entry.reason,
                message=f"{entry.title}: {entry.summary}", name=entry.event_name(name))

    async def drain(self) -> None:
        """Wait for every watcher (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _settle(self, namespace: str, name: str, alert: Alert) -> None:
        if not await self._alerts.settled(alert, timeout=self._settle_timeout):
            return  # not delivered (shut down first): the entry stays for a successor
        self.delivered(namespace, name, alert)
        await self.flush(namespace, name)

    async def flush(self, namespace: str, name: str) -> None:
        """Store this process's entries for the Deployment (never raises: a later save stores them
        anyway, and at worst a successor sends a delivered announcement once more)."""
        try:
            async with self.lock(namespace, name):
                await self._flush(namespace, name)
        except (KubeError, NotWriting, StateError) as exc:
            log.info("could not update the outbox", namespace=namespace, deployment=name, error=str(exc))
        except Exception as exc:  # e.g. the client closed at shutdown: the same harmless outcome, logged
            log.warning("could not update the outbox", namespace=namespace, deployment=name,
                        error=f"{type(exc).__name__}: {exc}")

    async def _flush(self, namespace: str, name: str) -> None:
        """Write this process's entries into the stored state, without overwriting a concurrent save."""
        for _ in range(FLUSH_ATTEMPTS):
            if not self._writer.may_write():
                return
            deployment = await self._kube.get(api_path("apps/v1", "deployments", namespace, name))
            state = read_state(deployment)
            owed = self.entries(namespace, name)
            if state.outbox == owed:
                return
            version = str((deployment.get("metadata") or {}).get("resourceVersion") or "")
            try:
                await self._writer.save_state(namespace, name, replace(state, outbox=owed),
                                              resource_version=version)
                return
            except KubeApiError as exc:
                if exc.code != 409:
                    raise
        log.info("the outbox entry stays until the next save: the Deployment kept changing",
                 namespace=namespace, deployment=name)
