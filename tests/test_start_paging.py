"""The simulated API server's list pages: read from the store's key order, the same pages as a full scan.

A page starts at its continue key by bisection and reads only the objects it returns (plus one, to know
whether the list goes on), as a real API server reads a page from etcd; what a client sees — the items,
`continue`, `remainingItemCount`, the list's resourceVersion — is what scanning and filtering the whole
list gives, also when objects are created and deleted between pages.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.clock import FakeClock
from sim.resources import CONFIGMAPS, NAMESPACES, ResourceType
from sim.store import ApiError, Store
from tests.simkit import KUBECTL_BINARIES, run_kubectl, sim_server

NAMESPACES_USED = ("alpha", "beta", "gamma")


def _seed(store: Store, count: int, *, rng: random.Random) -> None:
    for namespace in NAMESPACES_USED:
        if store.peek(NAMESPACES, "", namespace) is None:
            store.create(NAMESPACES, {"metadata": {"name": namespace}})
    for index in range(count):
        _create(store, f"cm-{index:03d}", rng=rng)


def _create(store: Store, name: str, *, rng: random.Random) -> None:
    store.create(CONFIGMAPS, {"metadata": {"name": name, "labels": {"tier": rng.choice(["x", "y"])}},
                              "data": {"n": name}}, namespace=rng.choice(NAMESPACES_USED))


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])


def _scanned_page(store: Store, rt: ResourceType, *, namespace: str | None, after: tuple[str, str] | None,
                  limit: int, tier: str | None) -> tuple[list[str], bool, int]:
    """The page by a full scan: every object sorted, those after `after`, filtered, cut at `limit`
    (names, whether the list continues, objects after the page)."""
    everything = sorted(store.iter_objects(rt), key=_key)
    after_start = [o for o in everything if (namespace is None or _key(o)[0] == namespace)
                   and (after is None or _key(o) > after)]
    matching = [o for o in after_start if tier is None or o["metadata"]["labels"]["tier"] == tier]
    return [f"{_key(o)[0]}/{_key(o)[1]}" for o in matching[:limit]], len(matching) > limit, \
        len(after_start) - limit


@pytest.mark.parametrize("namespace", [None, "beta"])
@pytest.mark.parametrize("tier", [None, "x"])
@pytest.mark.parametrize("limit", [1, 4, 7])
async def test_pages_are_those_of_a_full_scan_while_objects_come_and_go(
        tmp_path: Path, namespace: str | None, tier: str | None, limit: int) -> None:
    rng = random.Random(f"{namespace}-{tier}-{limit}")
    async with sim_server(tmp_path) as cluster, aiohttp.ClientSession(base_url=cluster.base_url) as session:
        store = cluster.store
        _seed(store, 40, rng=rng)
        path = f"/api/v1/namespaces/{namespace}/configmaps" if namespace else "/api/v1/configmaps"
        params: dict[str, str] = {"limit": str(limit), **({"labelSelector": f"tier={tier}"} if tier else {})}
        after: tuple[str, str] | None = None
        list_rv = ""
        seen: list[str] = []
        for created in range(200):
            expected_names, expected_more, expected_remaining = _scanned_page(
                store, CONFIGMAPS, namespace=namespace, after=after, limit=limit, tier=tier)
            async with session.get(path, params=params) as response:
                assert response.status == 200, await response.text()
                body = await response.json()
            metadata = body["metadata"]
            names = [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in body["items"]]
            assert names == expected_names, f"the page after {after}"
            list_rv = list_rv or metadata["resourceVersion"]
            assert metadata["resourceVersion"] == list_rv, "every page reports the first page's resourceVersion"
            assert ("continue" in metadata) == expected_more
            if expected_more and tier is None:
                assert metadata["remainingItemCount"] == expected_remaining
            else:
                assert "remainingItemCount" not in metadata
            seen += names
            if not expected_more:
                break
            token = json.loads(base64.urlsafe_b64decode(metadata["continue"] + "=" * (-len(metadata["continue"]) % 4)))
            assert token == {"v": "meta.k8s.io/v1", "rv": int(list_rv), "start": names[-1]}
            params["continue"] = metadata["continue"]
            after = (names[-1].split("/")[0], names[-1].split("/")[1])
            # Changes between two pages: one object goes (maybe one not read yet), one comes.
            victim = rng.choice(sorted(store.iter_objects(CONFIGMAPS), key=_key))
            store.delete(CONFIGMAPS, *_key(victim))
            _create(store, f"new-{created:03d}", rng=rng)
        else:
            pytest.fail("the list never ended")
        assert len(seen) == len(set(seen)), "no object is listed twice"


def test_a_page_reads_only_its_objects_and_one_more() -> None:
    store = Store(FakeClock())
    _seed(store, 0, rng=random.Random(1))
    for index in range(3_000):
        store.create(CONFIGMAPS, {"metadata": {"name": f"cm-{index:05d}"}}, namespace="beta")
    read: list[str] = []

    def counting(obj: dict[str, Any]) -> bool:
        read.append(obj["metadata"]["name"])
        return True

    for namespace in ("beta", None):
        read.clear()
        page, remaining, more = store.list_page(CONFIGMAPS, namespace, after=("beta", "cm-01499"), limit=250,
                                                predicate=counting)
        assert [o["metadata"]["name"] for o in page] == [f"cm-{i:05d}" for i in range(1_500, 1_750)]
        assert (remaining, more) == (1_250, True)
        assert read == [f"cm-{i:05d}" for i in range(1_500, 1_751)], "the page's objects and the next one only"


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTL_BINARIES)
async def test_kubectl_chunked_get_equals_an_unchunked_one(kubectl: Path, tmp_path: Path) -> None:
    async with sim_server(tmp_path, clock=FakeClock()) as cluster:  # a still clock: the AGE column agrees
        _seed(cluster.store, 40, rng=random.Random(7))

        async def get(*args: str) -> str:
            result = await run_kubectl(kubectl, cluster.kubeconfig, "get", "configmaps", *args, home=cluster.home)
            assert result.returncode == 0, result.stderr
            return result.stdout

        for selection in ([], ["-l", "tier=y"]):
            for scope in (["-A"], ["-n", "beta"]):
                whole = await get(*scope, *selection, "--chunk-size=0")
                assert whole.count("cm-") >= 3, (scope, selection, whole)
                assert await get(*scope, *selection, "--chunk-size=2") == whole
                columns = "-o=custom-columns=NS:.metadata.namespace,NAME:.metadata.name"
                assert await get(*scope, *selection, "--chunk-size=3", columns) == \
                    await get(*scope, *selection, "--chunk-size=0", columns)


def test_a_continue_is_checked_against_the_history_without_reading_it() -> None:
    store = Store(FakeClock(), history_size=3)
    _seed(store, 0, rng=random.Random(2))
    first = store.resource_version
    store.ensure_resumable(first)
    for index in range(3):
        store.create(CONFIGMAPS, {"metadata": {"name": f"cm-{index}"}}, namespace="alpha")
    store.ensure_resumable(first)  # the three events after it are all still in history
    store.create(CONFIGMAPS, {"metadata": {"name": "cm-3"}}, namespace="alpha")
    with pytest.raises(ApiError) as raised:
        store.ensure_resumable(first)
    assert (raised.value.code, raised.value.message) == (410, f"too old resource version: {first} ({first + 2})")
    with pytest.raises(ApiError):
        store.events_since(None, first)
