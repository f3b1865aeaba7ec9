"""The informer's cache holds every field the API server sent (less `managedFields`), with the strings
that repeat across objects stored once: listed objects and watched ones alike. A big list is read with
Python's cyclic collector paused, and what it built is then frozen out of the collector's way."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import json
from pathlib import Path
from typing import Any

from bench.common import create_deployments
from daemon.kube.client import KubeClient, api_path
from daemon.kube.watching import COLLECTOR, PAGE_SIZE, CollectorPause, Informer, compact, share_strings
from tests.simkit import deployment_manifest, sim_server
from tests.waiting import eventually


def _real_shaped(name: str) -> dict[str, Any]:
    """A Deployment as a real server would have it: applied by kubectl, owned by two field managers."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "resourceVersion": "7",
                         "labels": {"app": name, "tier": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 400 + "}",
                                         "deployment.kubernetes.io/revision": "3"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 2, "paused": False, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": "shop/web:1.0",
                                                           "ports": [{"containerPort": 8000, "protocol": "TCP"}],
                                                           "resources": {}}]}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "ratio": 0.5,
                       "conditions": [{"type": "Available", "status": "True", "message": "ok"}]}}


def _decoded(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as a fresh JSON decode gives it: no string shared with any other decode."""
    decoded: dict[str, Any] = json.loads(json.dumps(obj))
    return decoded


def test_shared_strings_keep_every_field_and_value() -> None:
    one, two = _decoded(_real_shaped("web-1")), _decoded(_real_shaped("web-2"))
    expected = copy.deepcopy(one)
    assert share_strings(one) == expected, "sharing strings must not change, add or drop anything"
    share_strings(two)
    image = [o["spec"]["template"]["spec"]["containers"][0]["image"] for o in (one, two)]
    assert image[0] is image[1], "a value repeated across objects is stored once"
    assert one["spec"]["strategy"]["type"] is two["spec"]["strategy"]["type"]
    long_one = one["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert long_one is not two["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], \
        "long strings are not interned"


def test_compacted_objects_are_equal_copies_sharing_keys_and_values() -> None:
    one, two = _decoded(_real_shaped("web-1")), _decoded(_real_shaped("web-2"))
    small_one, small_two = compact(one), compact(two)
    assert small_one == one, "compacting must not change, add or drop anything"
    assert small_two == two, "compacting must not change, add or drop anything"
    assert small_one["spec"] is not one["spec"], "a copy: the decoded object is untouched"
    key_one = next(k for k in small_one["spec"] if k == "template")
    key_two = next(k for k in small_two["spec"] if k == "template")
    assert key_one is key_two, "keys of separately decoded objects are stored once"
    assert small_one["status"]["ratio"] == 0.5
    assert small_one["spec"]["paused"] is False


async def test_the_cache_holds_what_the_server_sent_less_managed_fields(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        path = api_path("apps/v1", "deployments", "default")
        for name in ("web-0", "web-1"):
            await kube.create(path, deployment_manifest(name))
        informer = Informer(kube, group_version="apps/v1", plural="deployments", namespaces=("default",))
        seen: list[tuple[str, str]] = []

        async def handler(kind: str, obj: dict[str, Any]) -> None:
            seen.append((kind, str(obj["metadata"]["name"])))

        task = asyncio.create_task(informer.run(handler))
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await kube.create(path, deployment_manifest("web-2"))  # arrives as a watch event
            await eventually(lambda: ("ADDED", "web-2") in seen, timeout=10, what="web-2's ADDED")
            for name in ("web-0", "web-1", "web-2"):
                served = await kube.get(api_path("apps/v1", "deployments", "default", name))
                served["metadata"].pop("managedFields", None)
                assert informer.cache[("default", name)] == served, f"{name}: the cache differs from the server"
            listed, watched = informer.cache[("default", "web-0")], informer.cache[("default", "web-2")]
            assert listed["apiVersion"] is watched["apiVersion"], "listed and watched objects share their strings"
            image = [o["spec"]["template"]["spec"]["containers"][0]["image"] for o in (listed, watched)]
            assert image[0] is image[1]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_the_collector_pause_nests_and_freezes_once_released() -> None:
    pause = CollectorPause()
    assert gc.isenabled()
    try:
        pause.hold()
        pause.hold()
        assert not gc.isenabled(), "held: no collection while a big list is read"
        pause.release()
        assert not gc.isenabled(), "still held by the other list"
        assert pause.freezes == 0
        pause.release()
        assert gc.isenabled(), "released by the last holder: the collector runs again"
        assert pause.freezes == 1
        assert gc.get_freeze_count() > 0, "what the lists built is out of the collector's way"
    finally:
        gc.unfreeze()
        gc.enable()


async def test_a_big_list_is_read_without_collections_and_then_frozen(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        count = PAGE_SIZE + 10  # two pages
        create_deployments(cluster.store, "big", [f"web-{i:04d}" for i in range(count)])
        informer = Informer(kube, group_version="apps/v1", plural="deployments")
        collector_on: list[bool] = []

        async def handler(_kind: str, _obj: dict[str, Any]) -> None:
            collector_on.append(gc.isenabled())

        frozen_before = COLLECTOR.freezes
        task = asyncio.create_task(informer.run(handler))
        try:
            await asyncio.wait_for(informer.synced.wait(), 30)
            assert len(collector_on) == count
            assert not any(collector_on), "the collector must not run while the list is handed over"
            assert gc.isenabled(), "the collector runs again after the list"
            assert COLLECTOR.freezes == frozen_before + 1
            assert gc.get_freeze_count() >= count, "the cached objects are frozen"
        finally:
            gc.unfreeze()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
