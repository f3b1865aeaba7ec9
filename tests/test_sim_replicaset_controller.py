"""The simulated ReplicaSet controller: pods to match spec.replicas, deletion order, status, ownership."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.clock import FakeClock
from sim.controllers import ControllerManager
from sim.controllers.hashing import SAFE_ALPHABET
from sim.controllers.replicaset import pod_deletion_order
from sim.resources import EVENTS, NAMESPACES, PODS, REPLICASETS
from sim.store import Obj, Store, copy_json, rfc3339

T0 = 1_700_000_000.0


@dataclass
class Sim:
    store: Store
    clock: FakeClock

    async def run(self, seconds: float, step: float = 0.25) -> None:
        """Advance the fake clock in steps, letting the controllers catch up before and after each."""
        await settle()
        for _ in range(round(seconds / step)):
            await self.clock.advance(step)
            await settle()

    def rs(self, name: str = "api") -> Obj:
        return self.store.get(REPLICASETS, "shop", name)

    def pods(self, name: str = "api") -> list[Obj]:
        """Private copies of the ReplicaSet's pods."""
        uid = self.rs(name)["metadata"]["uid"]
        return [copy_json(p) for p in self.store.list_objects(PODS, "shop")[0]
                if any(r["uid"] == uid for r in p["metadata"].get("ownerReferences") or ())]

    def scale(self, replicas: int, name: str = "api") -> None:
        rs = self.rs(name)
        rs["spec"]["replicas"] = replicas
        rs["metadata"]["generation"] += 1
        self.store.replace(REPLICASETS, rs, namespace="shop", name=name)

    def events(self, reason: str) -> list[Obj]:
        return [e for e in self.store.list_objects(EVENTS, "shop")[0] if e["reason"] == reason]


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


def replicaset(name: str = "api", replicas: int = 3, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": {"team": "core"}},
                                  "spec": {"containers": [{"name": name, "image": "api:1"}]}},
                     **spec}}


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    clock = FakeClock(T0)
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    async with ControllerManager(store, clock):
        yield Sim(store, clock)


async def test_replicaset_creates_its_pods_and_reports_status(sim: Sim) -> None:
    rs = sim.store.create(REPLICASETS, replicaset())
    await settle()
    pods = sim.pods()
    assert len(pods) == 3
    for pod in pods:
        assert re.fullmatch(rf"api-[{SAFE_ALPHABET}]{{5}}", pod["metadata"]["name"])
        assert pod["metadata"]["generateName"] == "api-"
        assert pod["metadata"]["labels"] == {"app": "api"}
        assert pod["metadata"]["annotations"] == {"team": "core"}
        assert pod["metadata"]["ownerReferences"] == [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api", "uid": rs["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
        assert pod["spec"]["nodeName"] == "sim-node-1"
        assert pod["spec"]["restartPolicy"] == "Always", "pods get the API's defaults"
    assert sim.rs()["status"] == {"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}
    created = sorted(e["message"] for e in sim.events("SuccessfulCreate"))
    assert created == sorted(f"Created pod: {p['metadata']['name']}" for p in pods)
    assert {e["source"]["component"] for e in sim.events("SuccessfulCreate")} == {"replicaset-controller"}

    await sim.run(2)
    assert sim.rs()["status"] == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                                  "availableReplicas": 3, "observedGeneration": 1}


async def test_scale_down_marks_pods_terminating_and_the_kubelet_removes_them(sim: Sim) -> None:
    sim.store.create(REPLICASETS, replicaset())
    await sim.run(2)
    sim.scale(1)
    await settle()
    pods = sim.pods()
    terminating = [p for p in pods if p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 3
    assert len(terminating) == 2
    for pod in terminating:
        assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
        assert pod["metadata"]["deletionTimestamp"] == rfc3339(sim.clock.now() + 30)
    # Terminating pods are not replicas any more.
    assert sim.rs()["status"] == {"replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1,
                                  "availableReplicas": 1, "observedGeneration": 2}
    assert sorted(e["message"] for e in sim.events("SuccessfulDelete")) == sorted(
        f"Deleted pod: {p['metadata']['name']}" for p in terminating)
    await sim.run(1)
    assert len(sim.pods()) == 1


async def test_min_ready_seconds_delays_availability(sim: Sim) -> None:
    sim.store.create(REPLICASETS, replicaset(minReadySeconds=5))
    await sim.run(2)
    status = sim.rs()["status"]
    assert (status.get("readyReplicas"), status.get("availableReplicas")) == (3, None)
    await sim.run(4.75)
    assert "availableReplicas" not in sim.rs()["status"]
    await sim.run(0.5)
    assert sim.rs()["status"]["availableReplicas"] == 3, "a timer fires when the pods become available"


async def test_deleted_pod_is_replaced(sim: Sim) -> None:
    sim.store.create(REPLICASETS, replicaset())
    await sim.run(2)
    victim = sim.pods()[0]["metadata"]["name"]
    sim.store.delete(PODS, "shop", victim)
    await settle()
    names = {p["metadata"]["name"] for p in sim.pods()}
    assert len(names) == 3
    assert victim not in names


async def test_relabelled_pod_is_released_and_replaced_and_an_orphan_is_adopted(sim: Sim) -> None:
    sim.store.create(REPLICASETS, replicaset())
    await sim.run(2)
    pod = sim.pods()[0]
    pod["metadata"]["labels"] = {"app": "debug"}
    sim.store.replace(PODS, pod, namespace="shop", name=pod["metadata"]["name"])
    await settle()
    released = sim.store.get(PODS, "shop", pod["metadata"]["name"])
    assert "ownerReferences" not in released["metadata"]
    assert len(sim.pods()) == 3

    # Labelled back, the pod is adopted again and the surplus pod goes.
    released["metadata"]["labels"] = {"app": "api"}
    sim.store.replace(PODS, released, namespace="shop", name=pod["metadata"]["name"])
    await settle()
    adopted = sim.store.get(PODS, "shop", pod["metadata"]["name"])
    assert adopted["metadata"]["ownerReferences"][0]["name"] == "api"
    assert len([p for p in sim.pods() if not p["metadata"].get("deletionTimestamp")]) == 3


async def test_failing_pod_creation_sets_a_replica_failure_condition(sim: Sim) -> None:
    # A namespace that vanished under the ReplicaSet makes every pod creation fail.
    sim.store.create(REPLICASETS, replicaset(replicas=0))
    await settle()
    sim.store.delete(NAMESPACES, "", "shop")
    sim.scale(1)
    await settle()
    [cond] = sim.rs()["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        "ReplicaFailure", "True", "FailedCreate", 'namespaces "shop" not found')


def _pod(name: str, *, created: float, phase: str = "Running", ready: bool = True, node: bool = True,
         cost: int | None = None, restarts: int = 0, ready_since: float | None = None) -> Obj:
    meta: Obj = {"name": name, "creationTimestamp": rfc3339(created)}
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    conditions = [{"type": "Ready", "status": "True" if ready else "False",
                   "lastTransitionTime": rfc3339(ready_since if ready_since is not None else created)}]
    return {"metadata": meta, "spec": {"nodeName": "sim-node-1"} if node else {},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": [{"restartCount": restarts}]}}


def test_pods_are_deleted_unscheduled_pending_unready_cheap_then_newest_first() -> None:
    pods = [
        _pod("ready-old", created=T0),
        _pod("ready-new", created=T0 + 60),
        _pod("ready-new-ready-long-ago", created=T0 + 60, ready_since=T0 - 600),
        _pod("unready", created=T0, ready=False),
        _pod("pending", created=T0, phase="Pending", ready=False),
        _pod("unscheduled", created=T0, phase="Pending", ready=False, node=False),
        _pod("ready-old-cheap", created=T0, cost=-10),
        _pod("ready-restarting", created=T0, restarts=4),
    ]
    order = [p["metadata"]["name"] for p in pod_deletion_order(pods)]
    assert order == ["unscheduled", "pending", "unready", "ready-old-cheap", "ready-new", "ready-restarting",
                     "ready-old", "ready-new-ready-long-ago"]
