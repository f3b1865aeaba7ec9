"""The simulated Deployment controller against the Store, on a scaled clock (50× real time).

Each test drives a Deployment the way a user (or kubectl) would — writing its spec and bumping
`metadata.generation` as the API server does — and asserts what `kubectl rollout status/history/undo`
would see: ReplicaSets and their annotations, status counters, conditions, and Events.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.clock import FakeClock, ScaledClock
from sim.controllers import ControllerManager, pod_is_ready
from sim.controllers.events import EventRecorder
from sim.controllers.hashing import SAFE_ALPHABET, template_hash
from sim.resources import DEPLOYMENTS, EVENTS, NAMESPACES, PODS, REPLICASETS
from sim.store import Obj, Store, WatchEvent, copy_json
from tests.waiting import eventually

REVISION = "deployment.kubernetes.io/revision"
SPEED = 50.0


@dataclass
class Cluster:
    store: Store
    clock: ScaledClock
    manager: ControllerManager


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = ScaledClock(SPEED)
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    async with ControllerManager(store, clock) as manager:
        yield Cluster(store, clock, manager)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` real seconds."""
    await eventually(predicate, timeout=timeout, what=what, interval=0.002)


def deployment(name: str = "web", *, replicas: int = 3, image: str = "nginx:1.25", max_surge: Any = "25%",
               max_unavailable: Any = "25%", strategy: str = "RollingUpdate", env: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    container: Obj = {"name": name, "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    strategy_obj: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        strategy_obj["rollingUpdate"] = {"maxSurge": max_surge, "maxUnavailable": max_unavailable}
    meta: Obj = {"name": name, "namespace": "shop"}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10, "strategy": strategy_obj,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
                     **spec}}


def user_update(store: Store, mutate: Callable[[Obj], None], name: str = "web") -> Obj:
    """Change a Deployment as a user's PUT would: generation bumps when spec or annotations change."""
    current = store.get(DEPLOYMENTS, "shop", name)
    changed = copy_json(current)
    mutate(changed)
    if changed["spec"] != current["spec"] or changed["metadata"].get("annotations") != \
            current["metadata"].get("annotations"):
        changed["metadata"]["generation"] = current["metadata"]["generation"] + 1
    changed["status"] = current.get("status", {})
    return store.replace(DEPLOYMENTS, changed, namespace="shop", name=name)


def set_image(image: str) -> Callable[[Obj], None]:
    def mutate(d: Obj) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return mutate


def get(store: Store, name: str = "web") -> Obj:
    return store.get(DEPLOYMENTS, "shop", name)


def replicasets(store: Store, name: str = "web") -> list[Obj]:
    d = store.peek(DEPLOYMENTS, "shop", name)
    uid = d["metadata"]["uid"] if d else None
    return [rs for rs in store.list_objects(REPLICASETS, "shop")[0]
            if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or ())]


def revisions(store: Store, name: str = "web") -> dict[str, str]:
    return {rs["metadata"]["name"]: rs["metadata"]["annotations"][REVISION] for rs in replicasets(store, name)}


def pods_of(store: Store, rs: Obj) -> list[Obj]:
    return [p for p in store.list_objects(PODS, "shop")[0]
            if any(ref.get("uid") == rs["metadata"]["uid"] for ref in p["metadata"].get("ownerReferences") or ())]


def rolled_out(store: Store, name: str = "web") -> bool:
    """kubectl rollout status's "successfully rolled out", plus: no old pod left at all."""
    d = store.peek(DEPLOYMENTS, "shop", name)
    if d is None:
        return False
    status = d.get("status") or {}
    replicas = d["spec"]["replicas"]
    if d["metadata"]["generation"] > status.get("observedGeneration", 0):
        return False
    done = (status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas)
    pods = [p for rs in replicasets(store, name) for p in pods_of(store, rs)]
    return done and len(pods) == replicas


def progressing(d: Obj) -> Obj:
    return next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")


def scaling_events(store: Store) -> list[str]:
    """ScalingReplicaSet messages, oldest first. After 10 distinct ones client-go's aggregator folds
    the rest into one "(combined from similar events): …" event whose message is the latest."""
    events = [e for e in store.list_objects(EVENTS, "shop")[0] if e["reason"] == "ScalingReplicaSet"]
    events.sort(key=lambda e: (e["message"].startswith("(combined"), int(e["metadata"]["name"].rpartition(".")[2], 16)))
    return [e["message"].removeprefix("(combined from similar events): ") for e in events]


# ----- tests -----


async def test_new_deployment_gets_a_replicaset_pods_and_a_complete_status(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment())
    await wait_for(lambda: rolled_out(store), "the first rollout")
    d = get(store)
    [rs] = replicasets(store)
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert set(pod_hash) <= set(SAFE_ALPHABET)
    assert len(pod_hash) <= 10
    assert rs["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", "pod-template-hash": pod_hash}}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]
    assert rs["metadata"]["annotations"] == {REVISION: "1", "deployment.kubernetes.io/desired-replicas": "3",
                                             "deployment.kubernetes.io/max-replicas": "4"}
    assert rs["status"] == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                            "observedGeneration": 1}

    pods = pods_of(store, rs)
    assert len(pods) == 3
    for pod in pods:
        assert re.fullmatch(rf"web-{pod_hash}-[{SAFE_ALPHABET}]{{5}}", pod["metadata"]["name"])
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert pod["spec"]["nodeName"] == "sim-node-1"
        assert re.fullmatch(r"10\.244\.\d+\.\d+", pod["status"]["podIP"])
        assert pod_is_ready(pod)

    # The controller wrote status and the revision annotation through /status: generation stays 1.
    assert d["metadata"]["generation"] == 1
    assert d["metadata"]["annotations"] == {REVISION: "1"}
    status = {k: v for k, v in d["status"].items() if k != "conditions"}
    assert status == {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
                      "availableReplicas": 3}
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in d["status"]["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
        ("Progressing", "True", "NewReplicaSetAvailable", f'ReplicaSet "web-{pod_hash}" has successfully progressed.'),
    ]
    for cond in d["status"]["conditions"]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cond["lastUpdateTime"])
        assert cond["lastTransitionTime"] <= cond["lastUpdateTime"]
    assert scaling_events(store) == [f"Scaled up replica set web-{pod_hash} to 3 from 0"]


async def test_scaling_event_has_the_core_v1_event_shape(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(replicas=1))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    d = get(store)
    [event] = [e for e in store.list_objects(EVENTS, "shop")[0] if e["reason"] == "ScalingReplicaSet"]
    [rs] = replicasets(store)
    assert re.fullmatch(r"web\.[0-9a-f]{16,}", event["metadata"]["name"]), event["metadata"]["name"]
    assert int(event["metadata"]["name"].split(".")[1], 16) / 1e9 == pytest.approx(
        time.time(), abs=3600 * SPEED), "the suffix is the event's UnixNano in hex"
    involved = event["involvedObject"]
    assert list(involved) == ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion"]
    assert {k: v for k, v in involved.items() if k != "resourceVersion"} == {
        "kind": "Deployment", "namespace": "shop", "name": "web", "uid": d["metadata"]["uid"],
        "apiVersion": "apps/v1"}
    assert involved["resourceVersion"].isdigit()
    body = {k: v for k, v in event.items() if k not in ("metadata", "involvedObject")}
    stamp = event["firstTimestamp"]
    assert body == {
        "apiVersion": "v1", "kind": "Event", "reason": "ScalingReplicaSet",
        "message": f"Scaled up replica set {rs['metadata']['name']} to 1 from 0", "type": "Normal",
        "source": {"component": "deployment-controller"}, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "eventTime": None, "reportingComponent": "deployment-controller", "reportingInstance": ""}
    assert event["metadata"]["namespace"] == "shop"
    rs_name = rs["metadata"]["name"]
    rs_events = {(e["source"]["component"], e["reason"], e["involvedObject"]["kind"])
                 for e in store.list_objects(EVENTS, "shop")[0] if e["involvedObject"]["name"] == rs_name}
    assert rs_events == {("replicaset-controller", "SuccessfulCreate", "ReplicaSet")}


def _fenceposts_ok(store: Store, *, replicas: int, surge: int, unavailable: int,
                   violations: list[str]) -> Callable[[WatchEvent], None]:
    def check(event: WatchEvent) -> None:
        if event.bucket not in (REPLICASETS.bucket, PODS.bucket):
            return
        rss = replicasets(store)
        total = sum(rs["spec"]["replicas"] for rs in rss)
        pods = [p for rs in rss for p in pods_of(store, rs) if not p["metadata"].get("deletionTimestamp")]
        available = sum(1 for p in pods if pod_is_ready(p))
        if total > replicas + surge:
            violations.append(f"Σ spec.replicas {total} > {replicas} + {surge}")
        if len(pods) > replicas + surge:
            violations.append(f"{len(pods)} pods > {replicas} + {surge}")
        if available < replicas - unavailable:
            violations.append(f"{available} available pods < {replicas} - {unavailable}")
    return check


@pytest.mark.parametrize(("replicas", "max_surge", "max_unavailable", "surge", "unavailable"), [
    (3, "25%", "25%", 1, 0),  # surge rounds up, unavailable rounds down
    (4, 1, 1, 1, 1),
    (5, 0, "40%", 0, 2),
    (2, "50%", 0, 1, 0),
    (10, "30%", "20%", 3, 2),
])
async def test_rolling_update_respects_max_surge_and_max_unavailable_at_every_step(
        cluster: Cluster, replicas: int, max_surge: Any, max_unavailable: Any, surge: int, unavailable: int) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(replicas=replicas, max_surge=max_surge, max_unavailable=max_unavailable))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    [first] = replicasets(store)
    violations: list[str] = []
    checks = 0

    def counting(event: WatchEvent) -> None:
        nonlocal checks
        checks += 1
        inner(event)

    inner = _fenceposts_ok(store, replicas=replicas, surge=surge, unavailable=unavailable, violations=violations)
    store.add_listener(counting)
    user_update(store, set_image("nginx:1.26"))
    await wait_for(lambda: rolled_out(store) and get(store)["metadata"]["annotations"][REVISION] == "2"
                   and len(replicasets(store)) == 2 and not pods_of(store, first), "the second rollout")
    assert violations == [], violations[:5]
    assert checks > 4 * replicas
    second = next(rs for rs in replicasets(store) if rs["metadata"]["uid"] != first["metadata"]["uid"])
    assert revisions(store) == {first["metadata"]["name"]: "1", second["metadata"]["name"]: "2"}
    assert store.get(REPLICASETS, "shop", first["metadata"]["name"])["spec"]["replicas"] == 0
    assert second["spec"]["replicas"] == replicas
    assert second["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == str(replicas + surge)
    messages = scaling_events(store)
    if surge:
        assert messages[1] == f"Scaled up replica set {second['metadata']['name']} to {surge} from 0"
    else:  # created at 0 (no event), so the first move frees room by scaling the old one down
        assert messages[1] == (f"Scaled down replica set {first['metadata']['name']} to {replicas - unavailable} "
                               f"from {replicas}")
    assert all(" from " in m for m in messages)
    d = get(store)
    assert progressing(d)["reason"] == "NewReplicaSetAvailable"
    assert progressing(d)["message"] == f'ReplicaSet "{second["metadata"]["name"]}" has successfully progressed.'


async def test_undo_reuses_the_old_replicaset_and_renumbers_it(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(image="nginx:1.24", annotations={"kubernetes.io/change-cause": "image 1.24"}))
    await wait_for(lambda: rolled_out(store), "revision 1")
    for n, image in ((2, "nginx:1.25"), (3, "nginx:1.26")):
        def change(d: Obj, image: str = image) -> None:
            set_image(image)(d)
            d["metadata"]["annotations"]["kubernetes.io/change-cause"] = f"image {image[6:]}"
        user_update(store, change)
        await wait_for(lambda n=n: rolled_out(store) and get(store)["metadata"]["annotations"][REVISION] == str(n),
                       f"revision {n}")
    by_revision = {rs["metadata"]["annotations"][REVISION]: rs for rs in replicasets(store)}
    assert sorted(by_revision) == ["1", "2", "3"]
    assert {r: rs["metadata"]["annotations"]["kubernetes.io/change-cause"] for r, rs in by_revision.items()} == {
        "1": "image 1.24", "2": "image 1.25", "3": "image 1.26"}

    # kubectl rollout undo --to-revision=2: the RS template minus its hash label, as Go marshals it,
    # and the deployment's annotations rebuilt from the target RS (spec section 3, step 7-8).
    target = by_revision["2"]
    template = copy_json(target["spec"]["template"])
    del template["metadata"]["labels"]["pod-template-hash"]
    template["metadata"]["creationTimestamp"] = None
    template["spec"]["containers"][0]["resources"] = {}

    def undo(d: Obj) -> None:
        d["spec"]["template"] = template
        d["metadata"]["annotations"] = {REVISION: d["metadata"]["annotations"][REVISION],
                                        "kubernetes.io/change-cause": "image 1.25"}
    user_update(store, undo)
    await wait_for(lambda: rolled_out(store) and get(store)["metadata"]["annotations"][REVISION] == "4",
                   "the undo to complete")
    assert len(replicasets(store)) == 3, "the old ReplicaSet is reused, not duplicated"
    reused = store.get(REPLICASETS, "shop", target["metadata"]["name"])
    assert reused["metadata"]["annotations"][REVISION] == "4"
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    assert sorted(int(r) for r in revisions(store).values()) == [1, 3, 4]
    assert reused["spec"]["replicas"] == 3
    assert all(p["metadata"]["labels"]["pod-template-hash"] == target["metadata"]["labels"]["pod-template-hash"]
               for rs in replicasets(store) for p in pods_of(store, rs))
    assert scaling_events(store)[-1].startswith(f"Scaled down replica set {by_revision['3']['metadata']['name']} to 0")


async def test_never_ready_update_exceeds_the_progress_deadline(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(progressDeadlineSeconds=5))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    user_update(store, set_image("nginx:never-ready"))
    await wait_for(lambda: progressing(get(store))["reason"] == "ProgressDeadlineExceeded", "the deadline", 5)
    d = get(store)
    new = next(rs for rs in replicasets(store) if rs["metadata"]["annotations"][REVISION] == "2")
    cond = progressing(d)
    assert (cond["status"], cond["message"]) == ("False", f'ReplicaSet "{new["metadata"]["name"]}" has timed out '
                                                          "progressing.")
    # maxSurge 1 / maxUnavailable 0: one new pod that never becomes ready, the old three keep serving.
    assert (d["status"]["replicas"], d["status"]["updatedReplicas"], d["status"]["availableReplicas"]) == (4, 1, 3)
    assert d["status"]["unavailableReplicas"] == 1
    available = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"


async def test_new_never_ready_deployment_times_out_without_any_other_event() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    store.create(DEPLOYMENTS, deployment(image="app:never-ready", progressDeadlineSeconds=30))
    async with ControllerManager(store, clock):
        for _ in range(10):
            await clock.advance(1)
            await asyncio.sleep(0)
        assert progressing(get(store))["reason"] == "ReplicaSetUpdated"
        before = store.resource_version
        await clock.advance(15)
        await asyncio.sleep(0)
        assert store.resource_version == before, "nothing changes while the pods stay unready"
        assert progressing(get(store))["reason"] == "ReplicaSetUpdated"
        await clock.advance(10)
        for _ in range(20):
            await asyncio.sleep(0)
        d = get(store)
    [rs] = replicasets(store)
    assert progressing(d) | {"lastUpdateTime": "", "lastTransitionTime": ""} == {
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": f'ReplicaSet "{rs["metadata"]["name"]}" has timed out progressing.',
        "lastUpdateTime": "", "lastTransitionTime": ""}
    available = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"], available["message"]) == (
        "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")


async def test_paused_deployment_creates_no_replicaset_until_resumed(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment())
    await wait_for(lambda: rolled_out(store), "the first rollout")
    reasons: list[str] = []

    def record(event: WatchEvent) -> None:
        if event.bucket == DEPLOYMENTS.bucket:
            reason = progressing(event.obj)["reason"]
            if not reasons or reasons[-1] != reason:
                reasons.append(reason)
    store.add_listener(record)

    def pause(d: Obj) -> None:
        d["spec"]["paused"] = True
    user_update(store, pause)
    await wait_for(lambda: progressing(get(store))["reason"] == "DeploymentPaused", "the paused condition")
    cond = progressing(get(store))
    assert (cond["status"], cond["message"]) == ("Unknown", "Deployment is paused")
    user_update(store, set_image("nginx:1.26"))
    await wait_for(lambda: get(store)["status"]["observedGeneration"] == 3, "the template change to be observed")
    await asyncio.sleep(10 / SPEED)
    assert len(replicasets(store)) == 1, "no new ReplicaSet while paused"
    assert get(store)["metadata"]["annotations"][REVISION] == "1"

    def resume(d: Obj) -> None:
        del d["spec"]["paused"]
    user_update(store, resume)
    await wait_for(lambda: rolled_out(store) and len(replicasets(store)) == 2
                   and get(store)["metadata"]["annotations"][REVISION] == "2", "the resumed rollout")
    assert reasons[0] == "NewReplicaSetAvailable", "the first rollout was complete"
    assert reasons[1:4] == ["DeploymentPaused", "DeploymentResumed", "NewReplicaSetCreated"]
    assert reasons[-1] == "NewReplicaSetAvailable"


async def test_revision_history_limit_deletes_the_oldest_replicasets(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(revisionHistoryLimit=2))
    await wait_for(lambda: rolled_out(store), "revision 1")
    for n in range(2, 6):
        user_update(store, set_image(f"nginx:1.{20 + n}"))
        await wait_for(lambda n=n: rolled_out(store) and get(store)["metadata"]["annotations"][REVISION] == str(n),
                       f"revision {n}")
    await wait_for(lambda: len(replicasets(store)) == 3, "the history cleanup")
    assert sorted(revisions(store).values()) == ["3", "4", "5"]
    assert len(store.list_objects(PODS, "shop")[0]) == 3


async def test_scaling_up_and_down_resizes_the_replicaset(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment())
    await wait_for(lambda: rolled_out(store), "the first rollout")
    [rs] = replicasets(store)
    name = rs["metadata"]["name"]

    def scale(n: int) -> Callable[[Obj], None]:
        def mutate(d: Obj) -> None:
            d["spec"]["replicas"] = n
        return mutate

    user_update(store, scale(5))
    await wait_for(lambda: rolled_out(store), "scale to 5")
    rs = store.get(REPLICASETS, "shop", name)
    assert rs["spec"]["replicas"] == 5
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "5"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "7"
    user_update(store, scale(2))
    await wait_for(lambda: rolled_out(store), "scale to 2")
    assert store.get(REPLICASETS, "shop", name)["metadata"]["annotations"][
        "deployment.kubernetes.io/max-replicas"] == "3"
    assert scaling_events(store) == [f"Scaled up replica set {name} to 3 from 0",
                                     f"Scaled up replica set {name} to 5 from 3",
                                     f"Scaled down replica set {name} to 2 from 5"]
    assert get(store)["metadata"]["annotations"][REVISION] == "1"


async def test_scaling_mid_rollout_is_proportional(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(replicas=10, max_surge=3, max_unavailable=2))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    [old] = replicasets(store)
    user_update(store, set_image("nginx:never-ready"))

    def sizes() -> tuple[int, ...]:
        rss = sorted(replicasets(store), key=lambda rs: rs["metadata"]["annotations"][REVISION])
        return tuple(rs["spec"]["replicas"] for rs in rss)

    # 13 allowed: the new RS gets 3, the old one drops to 8 (2 unavailable), then the new RS takes 5.
    await wait_for(lambda: sizes() == (8, 5), "the stuck rollout")
    await asyncio.sleep(5 / SPEED)
    assert sizes() == (8, 5)

    def scale(d: Obj) -> None:
        d["spec"]["replicas"] = 20
    user_update(store, scale)
    # 10 more allowed (20 + 3 - 13): 8·23/13 = 14.15 → 14, 5·23/13 = 8.85 → 9.
    await wait_for(lambda: sizes() == (14, 9), "proportional scaling")
    rs = store.get(REPLICASETS, "shop", old["metadata"]["name"])
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "20"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "23"


async def test_recreate_never_runs_old_and_new_pods_together(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(strategy="Recreate"))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    [old] = replicasets(store)
    overlaps: list[str] = []

    def check(event: WatchEvent) -> None:
        if event.bucket != PODS.bucket:
            return
        pods = store.list_objects(PODS, "shop")[0]
        mine = [p for p in pods if p["metadata"]["ownerReferences"][0]["uid"] == old["metadata"]["uid"]]
        others = [p for p in pods if p not in mine]
        if mine and others:
            overlaps.append(f"{len(mine)} old and {len(others)} new pods")
    store.add_listener(check)
    user_update(store, set_image("nginx:1.26"))
    await wait_for(lambda: rolled_out(store) and len(replicasets(store)) == 2, "the recreate rollout")
    assert overlaps == []
    new = next(rs for rs in replicasets(store) if rs["metadata"]["uid"] != old["metadata"]["uid"])
    assert scaling_events(store)[1:] == [f"Scaled down replica set {old['metadata']['name']} to 0 from 3",
                                         f"Scaled up replica set {new['metadata']['name']} to 3 from 0"]
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "3"


async def test_hash_collision_bumps_collision_count(cluster: Cluster) -> None:
    store = cluster.store
    spec = deployment()
    squatter_name = f"web-{template_hash(spec['spec']['template'])}"
    store.create(REPLICASETS, {
        "metadata": {"name": squatter_name, "namespace": "shop", "labels": {"team": "other"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"team": "other"}},
                 "template": {"metadata": {"labels": {"team": "other"}},
                              "spec": {"containers": [{"name": "x", "image": "busybox"}]}}}})
    store.create(DEPLOYMENTS, spec)
    await wait_for(lambda: rolled_out(store), "the rollout after the collision")
    d = get(store)
    assert d["status"]["collisionCount"] == 1
    [rs] = replicasets(store)
    assert rs["metadata"]["name"] == f"web-{template_hash(spec['spec']['template'], 1)}"
    assert store.get(REPLICASETS, "shop", squatter_name)["metadata"].get("ownerReferences") is None


async def test_empty_selector_is_refused_with_a_warning(cluster: Cluster) -> None:
    store = cluster.store
    spec = deployment()
    spec["spec"]["selector"] = {}
    store.create(DEPLOYMENTS, spec)
    await wait_for(lambda: get(store).get("status", {}).get("observedGeneration") == 1, "observedGeneration")
    warnings = [(e["type"], e["reason"], e["message"]) for e in store.list_objects(EVENTS, "shop")[0]]
    assert ("Warning", "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.") \
        in warnings
    assert replicasets(store) == []


async def test_deleting_a_deployment_collects_its_replicasets_and_pods(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment())
    await wait_for(lambda: rolled_out(store), "the first rollout")
    store.delete(DEPLOYMENTS, "shop", "web")
    await wait_for(lambda: not store.list_objects(REPLICASETS, "shop")[0] and not store.list_objects(PODS, "shop")[0],
                   "garbage collection")


async def test_change_cause_and_other_annotations_are_copied_to_the_new_replicaset(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(annotations={
        "kubernetes.io/change-cause": "first", "team": "shop",
        "kubectl.kubernetes.io/last-applied-configuration": "{}"}))
    await wait_for(lambda: rolled_out(store), "the first rollout")
    [rs] = replicasets(store)
    annotations = rs["metadata"]["annotations"]
    assert annotations["kubernetes.io/change-cause"] == "first"
    assert annotations["team"] == "shop"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations

    def annotate(d: Obj) -> None:
        d["metadata"]["annotations"]["kubernetes.io/change-cause"] = "second"
    user_update(store, annotate)
    await wait_for(lambda: store.get(REPLICASETS, "shop", rs["metadata"]["name"])["metadata"]["annotations"][
        "kubernetes.io/change-cause"] == "second", "the annotation refresh on the current ReplicaSet")
    assert len(replicasets(store)) == 1


async def test_event_recorder_counts_repeats_and_combines_similar_events() -> None:
    clock = FakeClock()
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    d = store.create(DEPLOYMENTS, deployment())
    recorder = EventRecorder(store, clock, "deployment-controller")
    recorder.event(d, "Normal", "ScalingReplicaSet", "same")
    await clock.advance(5)
    recorder.event(d, "Normal", "ScalingReplicaSet", "same")
    [event] = store.list_objects(EVENTS, "shop")[0]
    assert event["count"] == 2
    assert event["lastTimestamp"] > event["firstTimestamp"]
    for i in range(9):
        recorder.event(d, "Normal", "ScalingReplicaSet", f"message {i}")
    assert len(store.list_objects(EVENTS, "shop")[0]) == 10
    recorder.event(d, "Normal", "ScalingReplicaSet", "message 10")
    recorder.event(d, "Normal", "ScalingReplicaSet", "message 11")
    events = store.list_objects(EVENTS, "shop")[0]
    assert len(events) == 11
    combined = next(e for e in events if e["message"].startswith("(combined"))
    assert combined["message"] == "(combined from similar events): message 11"
    assert combined["count"] == 2


async def test_min_ready_seconds_is_copied_and_kept_in_sync_without_a_new_replicaset(cluster: Cluster) -> None:
    store = cluster.store
    store.create(DEPLOYMENTS, deployment(minReadySeconds=3))
    await wait_for(lambda: bool(replicasets(store)), "the ReplicaSet")
    [rs] = replicasets(store)
    assert rs["spec"]["minReadySeconds"] == 3
    await wait_for(lambda: rolled_out(store), "the first rollout")

    def faster(d: Obj) -> None:
        d["spec"]["minReadySeconds"] = 0
    user_update(store, faster)
    await wait_for(lambda: "minReadySeconds" not in store.get(REPLICASETS, "shop", rs["metadata"]["name"])["spec"],
                   "minReadySeconds to reach the ReplicaSet")
    updated = store.get(REPLICASETS, "shop", rs["metadata"]["name"])
    assert updated["metadata"]["generation"] == rs["metadata"]["generation"] + 1, "a spec change bumps generation"
    assert len(replicasets(store)) == 1
    assert get(store)["metadata"]["annotations"][REVISION] == "1"
