"""A Deployment and its current ReplicaSet hold one copy of their pod spec in the informers' caches.

The cached objects stay equal to what the API server sends (less managedFields): only which equal dict
holds the pod spec changes. Listed and watched objects alike; a new template is not shared with the
old ReplicaSets; a deleted Deployment's spec is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from daemon.kube.client import KubeClient, api_path
from daemon.kube.sharing import CommonValues
from daemon.kube.watching import LAST_APPLIED, Informer, PodSpecPool
from sim.resources import DEPLOYMENTS, REPLICASETS
from sim.store import Store, copy_json
from sim.strategies import apply_defaults
from tests.simkit import deployment_manifest, sim_server
from tests.waiting import eventually

NS = "default"


def _deployment(store: Store, name: str, image: str) -> dict[str, Any]:
    manifest = deployment_manifest(name, image=image, replicas=0)
    apply_defaults(DEPLOYMENTS, manifest)
    return store.create(DEPLOYMENTS, manifest, namespace=NS)


def _replica_set(store: Store, deployment: dict[str, Any], hash_: str) -> dict[str, Any]:
    template = copy_json(deployment["spec"]["template"])
    template["metadata"]["labels"]["pod-template-hash"] = hash_
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
             "uid": deployment["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    rs: dict[str, Any] = {"metadata": {"name": f"{deployment['metadata']['name']}-{hash_}",
                                       "labels": template["metadata"]["labels"], "ownerReferences": [owner]},
                          "spec": {"replicas": 0, "selector": {"matchLabels": template["metadata"]["labels"]},
                                   "template": template},
                          "status": {"replicas": 0, "observedGeneration": 1}}
    apply_defaults(REPLICASETS, rs)
    return store.create(REPLICASETS, rs, namespace=NS)


def _pod_spec(informer: Informer, name: str) -> Any:
    return informer.cache[(NS, name)]["spec"]["template"]["spec"]


@contextlib.asynccontextmanager
async def _informers(kube: KubeClient, pool: PodSpecPool,
                     common: CommonValues | None = None) -> AsyncIterator[tuple[Informer, Informer]]:
    deployments = Informer(kube, group_version="apps/v1", plural="deployments", pod_specs=pool, common=common)
    replicasets = Informer(kube, group_version="apps/v1", plural="replicasets", pod_specs=pool, common=common)

    async def nothing(_kind: str, _obj: dict[str, Any]) -> None:
        pass

    tasks = [asyncio.create_task(deployments.run(nothing)), asyncio.create_task(replicasets.run(nothing))]
    try:
        await asyncio.wait_for(asyncio.gather(deployments.synced.wait(), replicasets.synced.wait()), 10)
        yield deployments, replicasets
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _assert_cache_is_the_server(kube: KubeClient, informer: Informer, plural: str) -> None:
    served = (await kube.get(api_path("apps/v1", plural)))["items"]
    for item in served:
        item["metadata"].pop("managedFields", None)
    expected = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in served}
    assert informer.cache == expected, f"the {plural} cache differs from what the server sends"


async def test_a_deployment_and_its_replicaset_share_one_pod_spec(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        store = cluster.store
        web = _deployment(store, "web", "shop/web:1.0")
        _replica_set(store, web, "aaa")
        api = _deployment(store, "api", "shop/api:1.0")
        pool = PodSpecPool()
        async with _informers(kube, pool) as (deployments, replicasets):
            assert _pod_spec(replicasets, "web-aaa") is _pod_spec(deployments, "web"), "listed: one copy"
            await _assert_cache_is_the_server(kube, deployments, "deployments")
            await _assert_cache_is_the_server(kube, replicasets, "replicasets")

            # A watched ReplicaSet shares its Deployment's spec too.
            _replica_set(store, api, "bbb")
            await eventually(lambda: (NS, "api-bbb") in replicasets.cache, timeout=10, what="api-bbb cached")
            assert _pod_spec(replicasets, "api-bbb") is _pod_spec(deployments, "api")

            # A new template: the new ReplicaSet shares the new spec; the old one keeps its own.
            changed = store.get(DEPLOYMENTS, NS, "web")
            changed["spec"]["template"]["spec"]["containers"][0]["image"] = "shop/web:2.0"
            web2 = store.replace(DEPLOYMENTS, changed, namespace=NS, name="web")
            await eventually(lambda: _pod_spec(deployments, "web")["containers"][0]["image"] == "shop/web:2.0",
                             timeout=10, what="the new template cached")
            _replica_set(store, web2, "ccc")
            await eventually(lambda: (NS, "web-ccc") in replicasets.cache, timeout=10, what="web-ccc cached")
            assert _pod_spec(replicasets, "web-ccc") is _pod_spec(deployments, "web")
            assert _pod_spec(replicasets, "web-aaa")["containers"][0]["image"] == "shop/web:1.0"
            await _assert_cache_is_the_server(kube, deployments, "deployments")
            await _assert_cache_is_the_server(kube, replicasets, "replicasets")

            assert len(pool) == 2
            store.delete(DEPLOYMENTS, NS, "api")
            await eventually(lambda: (NS, "api") not in deployments.cache, timeout=10, what="api deleted")
            assert len(pool) == 1, "a deleted Deployment's pod spec is forgotten"
            store.delete(REPLICASETS, NS, "api-bbb")  # its ReplicaSet goes after it, as the garbage collector does
            await eventually(lambda: (NS, "api-bbb") not in replicasets.cache, timeout=10, what="api-bbb deleted")
            assert len(pool) == 1, "nothing is remembered from a deleted ReplicaSet"


async def test_a_replicaset_listed_first_lends_its_spec_to_its_deployment(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        web = _deployment(cluster.store, "web", "shop/web:1.0")
        _replica_set(cluster.store, web, "aaa")
        pool = PodSpecPool()
        replicasets = Informer(kube, group_version="apps/v1", plural="replicasets", pod_specs=pool)
        listed, _ = await replicasets._list(api_path("apps/v1", "replicasets"), {})
        deployments = Informer(kube, group_version="apps/v1", plural="deployments", pod_specs=pool)
        listed_deployments, _ = await deployments._list(api_path("apps/v1", "deployments"), {})
        assert listed_deployments["items"][0]["spec"]["template"]["spec"] is listed["items"][0]["spec"]["template"][
            "spec"]


async def test_the_kubectl_apply_copy_of_the_manifest_is_not_cached(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        manifest = deployment_manifest("web", replicas=0)
        manifest["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(manifest), "team": "shop"}
        await kube.create(api_path("apps/v1", "deployments", NS), manifest)
        pool = PodSpecPool()
        async with _informers(kube, pool) as (deployments, _):
            served = await kube.get(api_path("apps/v1", "deployments", NS, "web"))
            assert LAST_APPLIED in served["metadata"]["annotations"], "the server keeps it"
            served["metadata"].pop("managedFields", None)
            del served["metadata"]["annotations"][LAST_APPLIED]
            assert deployments.cache[(NS, "web")] == served, "all else is cached as served"

            # A watched change likewise.
            manifest["metadata"]["annotations"]["team"] = "checkout"
            await kube.patch(api_path("apps/v1", "deployments", NS, "web"),
                             {"metadata": {"annotations": manifest["metadata"]["annotations"]}})
            await eventually(lambda: deployments.cache[(NS, "web")]["metadata"]["annotations"].get("team")
                             == "checkout", timeout=10, what="the patched annotations cached")
            served = await kube.get(api_path("apps/v1", "deployments", NS, "web"))
            served["metadata"].pop("managedFields", None)
            del served["metadata"]["annotations"][LAST_APPLIED]
            assert deployments.cache[(NS, "web")] == served


def test_nothing_reads_the_kubectl_apply_annotation_from_the_cache() -> None:
    """The annotation is dropped from cached objects. Only the undo keeps it (an undo leaves the Deployment's
    own copy on the server), and the undo plans from the Deployment read from the server, not the cache."""
    daemon_dir = Path(__file__).resolve().parent.parent / "daemon"
    sources = {str(path.relative_to(daemon_dir)): path.read_text() for path in daemon_dir.rglob("*.py")}
    naming = sorted(name for name, text in sources.items() if "last-applied" in text or "kubectl.kubernetes.io" in text)
    assert naming == ["kube/rollback.py", "kube/sharing.py"]
    planners = sorted(name for name, text in sources.items() if "plan_undo(" in text.replace("def plan_undo(", ""))
    assert planners == ["actions.py", "kube/rollback.py"]
    for name in planners:
        lines = sources[name].splitlines()
        calls = [n for n, line in enumerate(lines) if "plan_undo(deployment" in line and "def " not in line]
        assert calls, name
        for call in calls:
            assert any("deployment, replica_sets = await read_for_undo(" in line for line in lines[call - 4:call]), \
                f"{name}:{call + 1}: plans an undo from a Deployment not read from the server just before"


async def test_recurring_parts_of_objects_are_held_once(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        store = cluster.store
        web, api = _deployment(store, "web", "shop/web:1.0"), _deployment(store, "api", "shop/api:1.0")
        _replica_set(store, web, "aaa")
        _replica_set(store, api, "bbb")
        async with _informers(kube, PodSpecPool(), CommonValues()) as (deployments, replicasets):
            one, two = deployments.cache[(NS, "web")], deployments.cache[(NS, "api")]
            assert one["spec"]["strategy"] == {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
            assert one["spec"]["strategy"] is two["spec"]["strategy"]
            containers = [d["spec"]["template"]["spec"]["containers"][0] for d in (one, two)]
            assert containers[0]["resources"] is containers[1]["resources"]
            assert containers[0] is not containers[1], "the containers differ (their images)"
            rs_one, rs_two = replicasets.cache[(NS, "web-aaa")], replicasets.cache[(NS, "api-bbb")]
            assert rs_one["status"] is rs_two["status"]
            await _assert_cache_is_the_server(kube, deployments, "deployments")
            await _assert_cache_is_the_server(kube, replicasets, "replicasets")


def test_common_values_keep_types_and_order_apart_and_are_bounded() -> None:
    values = CommonValues(limit=5)
    kinds = [{"n": 1}, {"n": True}, {"n": 1.0}, {"n": "1"}]
    assert [values.shared(v) is v for v in kinds] == [True] * 4, "1, True, 1.0 and '1' are different values"
    again = [values.shared({"n": 1}), values.shared({"n": True}), values.shared({"n": 1.0}), values.shared({"n": "1"})]
    assert all(a is k for a, k in zip(again, kinds, strict=True))
    ordered, reversed_ = {"a": 1, "b": 2}, {"b": 2, "a": 1}
    assert values.shared(ordered) is ordered
    assert values.shared(reversed_) is reversed_, "equal dicts in another order keep their own order"
    assert len(values) == 5
    late = {"c": 3}
    assert values.shared(late) is late
    assert values.shared({"c": 3}) is not late, "full: nothing more is kept"
    deep = {"a": {"b": {"c": {"d": 1}}}}
    big = {str(i): i for i in range(9)}
    fresh = CommonValues()
    assert fresh.shared(deep) is deep
    assert fresh.shared(big) is big
    assert len(fresh) == 0, "too deep or big: not kept"
