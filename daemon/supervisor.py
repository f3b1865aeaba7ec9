"""The supervisor: a thin loop from the watches to the reconciler.

    informers (Deployments, ReplicaSets) ──dirty keys──▶ queue ──▶ worker ──▶ Reconciler.reconcile(key)

Two informers (one list+watch per kind, for every watched namespace) keep caches; every change marks
its Deployment dirty (a ReplicaSet marks its owner). One worker takes keys off the queue and hands
the Deployment and its ReplicaSets, as cached now, to the `Reconciler` — which owns what a rollout
is and which task judges it. Leadership changes wake the worker: on becoming leader every
Deployment is reconciled as "first sight" (resumed from its state annotation, never re-announced),
on losing it every analysis and action in flight is cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog

from daemon.clock import Clock
from daemon.kube.client import KubeClient
from daemon.kube.rollout_state import owned_replica_sets
from daemon.kube.sharing import CommonValues, PodSpecPool
from daemon.kube.watching import Informer
from daemon.metrics import Metrics
from daemon.reconcile import Reconciler
from daemon.view.collect import v1_views, v2_document

log = structlog.get_logger("rollguard.supervisor")

Key = tuple[str, str]
Obj = dict[str, Any]
_WAKE: Key = ("", "")  # not a Deployment: wakes the worker to act on a leadership change
YIELD_EVERY = 10
"""Keys reconciled, or informer events handled, between two yields to the event loop during a burst
(a first sync of thousands)."""


class Leadership(Protocol):
    """The leader elector as the supervisor sees it."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def changed(self) -> asyncio.Event: ...


class Supervisor:
    """Watches Deployments and ReplicaSets and feeds the reconciler (see the module docstring)."""

    def __init__(self, *, kube: KubeClient, reconciler: Reconciler, clock: Clock, namespaces: tuple[str, ...] = (),
                 leadership: Leadership | None = None, metrics: Metrics | None = None) -> None:
        self._reconciler = reconciler
        self._clock = clock
        self._leadership = leadership
        relisted = (lambda plural: metrics.watch_relists.labels(resource=plural).inc()) if metrics else None
        # Equal parts of cached objects held once: a Deployment's pod spec and its current ReplicaSet's,
        # and small parts that recur across objects (daemon.kube.sharing).
        pod_specs, common = PodSpecPool(), CommonValues()
        self.deployments = Informer(kube, group_version="apps/v1", plural="deployments", namespaces=namespaces,
                                    clock=clock, on_relist=relisted, pod_specs=pod_specs, common=common)
        self.replicasets = Informer(kube, group_version="apps/v1", plural="replicasets", namespaces=namespaces,
                                    clock=clock, on_relist=relisted, pod_specs=pod_specs, common=common)
        self._rs_by_owner: dict[str, list[Key]] = {}
        """The ReplicaSets of each Deployment (by uid): a list, a few keys each (a set costs 4x the memory)."""
        self._dirty: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._events = 0
        self._was_leader = False
        self._initial: set[Key] = set()
        """Deployments not reconciled since start or since this replica became leader: resumed, never announced."""
        self.synced = asyncio.Event()

    async def run(self) -> None:
        """Run the informers and the reconcile worker until cancelled; analyses are cancelled on exit."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.deployments.run(self._on_deployment), name="watch-deployments")
                group.create_task(self.replicasets.run(self._on_replicaset), name="watch-replicasets")
                group.create_task(self._worker(), name="reconcile")
                if self._leadership is not None:
                    group.create_task(self._watch_leadership(self._leadership), name="leadership")
        finally:
            await self._reconciler.cancel_all()

    def ready(self) -> tuple[bool, str]:
        if not self.synced.is_set():
            return False, "waiting for the first list of Deployments and ReplicaSets"
        return True, "ok" + ("" if self._is_leader() else " (follower)")

    def analyses(self) -> list[dict[str, Any]]:
        return v1_views(self._reconciler.analyses(), self.deployments.cache, now=self._clock.now())

    def analysis_list(self) -> dict[str, Any]:
        """The `/api/v2/analyses` document (`daemon.view.schema`)."""
        return v2_document(self._reconciler.analyses(), self.deployments.cache, self._replica_sets_of,
                           now=self._clock.now())

    def _is_leader(self) -> bool:
        return self._leadership is None or self._leadership.is_leader

    async def _watch_leadership(self, leadership: Leadership) -> None:
        """Wake the worker at each change of leadership, so it resumes or stops analyses now."""
        while True:
            await leadership.changed.wait()
            leadership.changed.clear()
            self._enqueue(_WAKE)

    # ----- informer handlers -----

    async def _on_deployment(self, _kind: str, obj: Obj) -> None:
        await self._share_the_loop()
        meta = obj.get("metadata") or {}
        self._enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    async def _on_replicaset(self, kind: str, obj: Obj) -> None:
        await self._share_the_loop()
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                owners = self._rs_by_owner.setdefault(str(ref.get("uid")), [])
                if kind == "DELETED":
                    if key in owners:
                        owners.remove(key)
                elif key not in owners:
                    owners.append(key)
                self._enqueue((key[0], str(ref.get("name"))))

    async def _share_the_loop(self) -> None:
        """Yield to the event loop every YIELD_EVERY informer events: a first list (or a re-list) of
        10,000 Deployments is handed over item by item without the informer ever waiting, and
        `/healthz`, the lease renewal and the other watch must be served meanwhile."""
        self._events += 1
        if self._events % YIELD_EVERY == 0:
            await asyncio.sleep(0)

    def _enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._dirty.put_nowait(key)

    # ----- the worker -----

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
            if handled % YIELD_EVERY == 0:
                # Queue.get() does not suspend while work is queued; let the HTTP server, the lease
                # renewal and the watches run during a first sync of thousands of Deployments.
                await asyncio.sleep(0)
            leader = self._is_leader()
            if leader != self._was_leader:
                await self._leadership_changed(leader)
            if key == _WAKE or not leader:
                continue
            try:
                deployment = self.deployments.cache.get(key)
                await self._reconciler.reconcile(key, deployment, self._replica_sets_of(deployment),
                                                 first_sight=key in self._initial)
            except Exception:
                log.exception("reconcile failed", namespace=key[0], deployment=key[1])
            self._initial.discard(key)

    async def _leadership_changed(self, leader: bool) -> None:
        self._was_leader = leader
        if leader:
            log.info("leading: resuming analyses from state annotations")
            self._reconciler.forget_all()  # re-read everything from the annotations, as a fresh daemon would
            self._initial = set(self.deployments.cache)
            for key in list(self.deployments.cache):
                self._enqueue(key)
        else:
            log.warning("not leading: stopping every analysis and action in flight")
            await self._reconciler.cancel_all()

    def _replica_sets_of(self, deployment: Obj | None) -> list[Obj]:
        if deployment is None:
            return []
        uid = str((deployment.get("metadata") or {}).get("uid"))
        keys = self._rs_by_owner.get(uid, [])
        items = [self.replicasets.cache[k] for k in keys if k in self.replicasets.cache]
        return [dict(rs) for rs in owned_replica_sets(deployment, items)]
