"""The simulated kube-controller-manager: work queues, workers, timers and the garbage collector.

`ControllerManager(store, clock)` registers one Store listener that turns every change into work-queue
keys (`(namespace, name)`), the way informer event handlers do:

| change | enqueues |
|---|---|
| Deployment | the deployment; when deleted, its dependents for garbage collection |
| ReplicaSet | the replica set and its controlling Deployment (an orphan: every Deployment in the namespace) |
| Pod | the pod (kubelet), its controlling ReplicaSet or Job, and on deletion the ReplicaSet's Deployment |
| Job | the job |

Each queue has one named worker task (`sim-deployment-controller`, `sim-replicaset-controller`,
`sim-job-controller`, `sim-kubelet`, `sim-garbage-collector`) that syncs one key at a time; a key
added while queued is not duplicated. Controllers ask for delayed syncs (ready delays, progress
deadlines, back-offs) through `clock.sleep` timers, one per key, so a `FakeClock` drives them all.
A sync that fails with a 409 is retried at once; any other error is logged and retried with back-off.
Workers yield to the event loop between keys, so a ReplicaSet written by the Deployment controller is
usually reconciled before that Deployment's next pass reads its status.

Every task is cancelled and awaited by `stop()` (or leaving `async with`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import structlog

from daemon.clock import Clock
from sim.controllers.deployment import DeploymentController
from sim.controllers.jobs import JobController
from sim.controllers.kubelet import NODE_NAME, Kubelet
from sim.controllers.replicaset import ReplicaSetController, controller_ref, delete_pod
from sim.resources import DEPLOYMENTS, JOBS, PODS, REPLICASETS
from sim.selectors import selector_matches
from sim.store import ApiError, Store, WatchEvent

__all__ = ["ControllerManager", "WorkQueue"]

Key = tuple[str, str]
Handler = Callable[[str, str], None]

_ERROR_BACKOFF_BASE = 0.05
_ERROR_BACKOFF_MAX = 30.0

log = structlog.get_logger(__name__)


class WorkQueue:
    """A de-duplicating queue of keys with delayed adds, drained by one worker calling `handler`."""

    def __init__(self, name: str, handler: Handler, clock: Clock) -> None:
        self.name = name
        self._handler = handler
        self._clock = clock
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._timers: dict[Key, tuple[float, asyncio.Task[None]]] = {}
        self._failures: dict[Key, int] = {}

    def add(self, key: Key) -> None:
        """Queue `key` unless it is already waiting."""
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Queue `key` after `delay` seconds of clock time; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        deadline = self._clock.now() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= deadline and not current[1].done():
                return
            current[1].cancel()
        task = asyncio.create_task(self._fire(key, delay), name=f"sim-{self.name}-timer")
        self._timers[key] = (deadline, task)

    async def _fire(self, key: Key, delay: float) -> None:
        await self._clock.sleep(delay)
        timer = self._timers.get(key)
        if timer is not None and timer[1] is asyncio.current_task():
            del self._timers[key]
        self.add(key)

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Sync keys forever (until cancelled); one failing key never stops the worker."""
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            try:
                self._handler(*key)
            except ApiError as err:
                if err.code == 409:
                    self.add(key)  # lost a race: re-read and try again
                else:
                    self._retry_later(key, err)
            except Exception as err:  # a bug in one sync must not stop the controller
                self._retry_later(key, err)
            else:
                self._failures.pop(key, None)
            # Let the other controllers react to what this sync wrote before the next key.
            await asyncio.sleep(0)

    def _retry_later(self, key: Key, err: Exception) -> None:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(_ERROR_BACKOFF_BASE * 2**failures, _ERROR_BACKOFF_MAX)
        log.error("sync failed", controller=self.name, key="/".join(key), retry_in=delay,
                  error=str(err), exc_info=not isinstance(err, ApiError))
        self.add_after(key, delay)

    async def close(self) -> None:
        """Cancel every pending timer and wait for them to finish."""
        tasks = [task for _, task in self._timers.values()]
        self._timers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ControllerManager:
    """Runs the Deployment, ReplicaSet and Job controllers, the kubelet and the garbage collector."""

    def __init__(self, store: Store, clock: Clock, *, node_name: str = NODE_NAME,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.deployments = DeploymentController(store, clock, schedule=self._later("deployment"))
        self.replicasets = ReplicaSetController(store, clock, schedule=self._later("replicaset"),
                                                node_name=node_name, rng=rng)
        self.jobs = JobController(store, clock, schedule=self._later("job"), node_name=node_name, rng=rng)
        self.kubelet = Kubelet(store, clock, schedule=self._later("kubelet"), node_name=node_name)
        self._queues: dict[str, WorkQueue] = {
            "deployment": WorkQueue("deployment-controller", self.deployments.sync, clock),
            "replicaset": WorkQueue("replicaset-controller", self.replicasets.sync, clock),
            "job": WorkQueue("job-controller", self.jobs.sync, clock),
            "kubelet": WorkQueue("kubelet", self.kubelet.sync, clock),
            "gc": WorkQueue("garbage-collector", self._collect_garbage, clock),
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._listening = False

    # ----- lifecycle -----

    async def start(self) -> None:
        """Start the workers and queue every existing object once (an informer's initial list)."""
        if self._running:
            raise RuntimeError("ControllerManager is already running")
        self._running = True
        if not self._listening:
            # The Store has no way to remove a listener; a stopped manager's listener does nothing.
            self.store.add_listener(self._on_change)
            self._listening = True
        for rt, queue in ((DEPLOYMENTS, "deployment"), (REPLICASETS, "replicaset"), (JOBS, "job"),
                          (PODS, "kubelet")):
            for obj in self.store.iter_objects(rt):
                self._queues[queue].add((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
        for work in self._queues.values():
            task = asyncio.create_task(work.run(), name=f"sim-{work.name}")
            task.add_done_callback(self._worker_done)
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel the workers and timers and wait for them; safe to call twice."""
        self._running = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for work in self._queues.values():
            await work.close()

    async def __aenter__(self) -> ControllerManager:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._running

    def pending(self) -> int:
        """Keys waiting in all queues (timers not counted)."""
        return sum(len(q) for q in self._queues.values())

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        # Workers only end by cancellation; anything else is a bug worth shouting about.
        log.error("controller worker stopped", task=task.get_name(), error=repr(task.exception()))

    def _later(self, queue: str) -> Callable[[str, str, float], None]:
        def schedule(namespace: str, name: str, delay: float) -> None:
            if self._running:
                self._queues[queue].add_after((namespace, name), delay)
        return schedule

    # ----- event routing -----

    def _on_change(self, event: WatchEvent) -> None:
        if not self._running:
            return
        obj = event.obj
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        key = (namespace, str(meta.get("name", "")))
        deleted = event.type == "DELETED"
        if event.bucket == DEPLOYMENTS.bucket:
            self._queues["deployment"].add(key)
        elif event.bucket == REPLICASETS.bucket:
            self._queues["replicaset"].add(key)
            owner = controller_ref(obj)
            if owner is not None:
                if owner.get("kind") == "Deployment":
                    self._queues["deployment"].add((namespace, str(owner.get("name"))))
            else:
                # An orphan may be adopted by any Deployment whose selector matches.
                for d in self.store.list_objects(DEPLOYMENTS, namespace)[0]:
                    self._queues["deployment"].add((namespace, d["metadata"]["name"]))
        elif event.bucket == PODS.bucket:
            self._queues["kubelet"].add(key)
            self._route_pod(obj, namespace, deleted=deleted)
        elif event.bucket == JOBS.bucket:
            self._queues["job"].add(key)
        if deleted and event.bucket in (DEPLOYMENTS.bucket, REPLICASETS.bucket, JOBS.bucket) and meta.get("uid"):
            self._queues["gc"].add((namespace, str(meta["uid"])))

    def _route_pod(self, pod: Mapping[str, Any], namespace: str, *, deleted: bool) -> None:
        owner = controller_ref(pod)
        if owner is None:
            if not deleted:
                labels = (pod.get("metadata") or {}).get("labels") or {}
                for rs in self.store.list_objects(REPLICASETS, namespace)[0]:
                    selector = (rs.get("spec") or {}).get("selector") or {}
                    if selector and _safe_match(selector, labels):
                        self._queues["replicaset"].add((namespace, rs["metadata"]["name"]))
            return
        name = str(owner.get("name", ""))
        if owner.get("kind") == "ReplicaSet":
            self._queues["replicaset"].add((namespace, name))
            if deleted:
                # Recreate waits for old pods to be gone, which only pod deletions announce.
                owner_rs = self.store.peek(REPLICASETS, namespace, name)
                rs_owner = controller_ref(owner_rs) if owner_rs is not None else None
                if rs_owner is not None and rs_owner.get("kind") == "Deployment":
                    self._queues["deployment"].add((namespace, str(rs_owner.get("name"))))
        elif owner.get("kind") == "Job":
            self._queues["job"].add((namespace, name))

    # ----- garbage collection -----

    def _collect_garbage(self, namespace: str, owner_uid: str) -> None:
        """Delete (or, with other owners left, release) the dependents of a deleted owner (background
        propagation); pods are deleted gracefully."""
        now = self.clock.now()
        for rt in (REPLICASETS, PODS):
            for obj in list(self.store.list_objects(rt, namespace)[0]):
                refs = (obj.get("metadata") or {}).get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                name = obj["metadata"]["name"]
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                try:
                    if remaining:
                        released = dict(obj)
                        released["metadata"] = {**obj["metadata"], "ownerReferences": remaining}
                        self.store.replace(rt, released, namespace=namespace, name=name,
                                           expect_rv=obj["metadata"]["resourceVersion"])
                    elif rt is PODS:
                        delete_pod(self.store, obj, now)
                    else:
                        self.store.delete(rt, namespace, name)
                except ApiError as err:
                    if err.code != 404:
                        raise


def _safe_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    try:
        return selector_matches(selector, labels)
    except ValueError:
        return False
