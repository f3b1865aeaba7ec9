"""The simulated API server's fault hooks (`sim.faults`), driven over HTTP as the chaos harness drives them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from daemon.clock import ScaledClock
from sim.apiserver import AuditRecord, build_app
from sim.behaviour import behaviour_from_env
from sim.faults import Faults
from sim.resources import DEPLOYMENTS
from sim.store import Store
from sim.strategies import apply_defaults, prepare_create
from sim.workload import render_metrics
from tests.simkit import deployment_manifest

DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


@asynccontextmanager
async def server(faults: Faults | None) -> AsyncIterator[tuple[str, Store, list[AuditRecord]]]:
    store = Store(ScaledClock(1.0))
    audit: list[AuditRecord] = []
    runner = web.AppRunner(build_app(store, audit=audit, faults=faults), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", store, audit
    finally:
        await runner.cleanup()


def create_web(store: Store) -> dict[str, Any]:
    obj = deployment_manifest("web")
    obj["metadata"]["namespace"] = "default"
    apply_defaults(DEPLOYMENTS, obj)
    prepare_create(DEPLOYMENTS, obj, store)
    return store.create(DEPLOYMENTS, obj, namespace="default")


async def test_fault_routes_are_absent_unless_faults_are_asked_for() -> None:
    async with server(None) as (url, _, _), aiohttp.ClientSession() as http, \
            http.post(f"{url}/_sim/faults", json={"cutWatches": True}) as resp:
        assert resp.status == 404, await resp.text()


async def test_a_429_with_retry_after_answers_only_the_matching_requests_and_is_audited() -> None:
    faults = Faults()
    async with server(faults) as (url, store, audit), aiohttp.ClientSession() as http:
        create_web(store)
        rule = {"verb": "patch", "resource": "deployments", "name": "web", "user": "daemon-a", "code": 429,
                "retryAfter": 2, "count": 1}
        async with http.post(f"{url}/_sim/faults", json={"rules": [rule]}) as resp:
            assert resp.status == 200, await resp.text()
        patch = {"metadata": {"annotations": {"a": "b"}}}
        headers = {"Content-Type": "application/merge-patch+json"}
        async with http.patch(f"{url}{DEPLOY}/web", data=json.dumps(patch),
                              headers={**headers, "Authorization": "Bearer kubectl"}) as resp:
            assert resp.status == 200, "another user's patch is not matched"
        async with http.patch(f"{url}{DEPLOY}/web", data=json.dumps(patch),
                              headers={**headers, "Authorization": "Bearer daemon-a"}) as resp:
            assert (resp.status, resp.headers.get("Retry-After")) == (429, "2")
            assert (await resp.json())["reason"] == "TooManyRequests"
        async with http.patch(f"{url}{DEPLOY}/web", data=json.dumps(patch),
                              headers={**headers, "Authorization": "Bearer daemon-a"}) as resp:
            assert resp.status == 200, "the rule applied to one request only"
        async with http.get(f"{url}/_sim/faults") as resp:
            assert (await resp.json())["injected"] == {"error-429": 1}
    patches = [(r.user, r.code, r.object_revision) for r in audit if r.verb == "patch"]
    assert patches == [("kubectl", 200, ""), ("daemon-a", 429, ""), ("daemon-a", 200, "")]
    assert json.loads(audit[-1].body) == patch


async def test_the_concurrent_writer_lands_between_a_read_and_its_json_patch() -> None:
    faults = Faults()
    async with server(faults) as (url, store, _), aiohttp.ClientSession() as http:
        created = create_web(store)
        read_rv = created["metadata"]["resourceVersion"]
        spec = {"beforePatch": [{"kind": "annotate", "namespace": "default", "name": "web",
                                 "key": "team", "value": "payments"}]}
        async with http.post(f"{url}/_sim/faults", json=spec) as resp:
            assert resp.status == 200
        body = [{"op": "test", "path": "/metadata/resourceVersion", "value": read_rv},
                {"op": "replace", "path": "/spec/replicas", "value": 1}]
        async with http.patch(f"{url}{DEPLOY}/web", data=json.dumps(body),
                              headers={"Content-Type": "application/json-patch+json"}) as resp:
            answer = await resp.json()
            assert resp.status == 422, answer
        stored = store.get(DEPLOYMENTS, "default", "web")
        assert stored["metadata"]["annotations"]["team"] == "payments"
        assert stored["spec"]["replicas"] == 3, "the fenced patch wrote nothing"
        assert dict(faults.injected) == {"concurrent-annotate": 1}


async def test_compaction_makes_a_watch_resume_get_410_and_cut_watches_ends_open_ones() -> None:
    faults = Faults()
    async with server(faults) as (url, store, _), aiohttp.ClientSession() as http:
        old_rv = create_web(store)["metadata"]["resourceVersion"]
        async with http.get(f"{url}{DEPLOY}", params={"watch": "1", "resourceVersion": "0"}) as watch:
            await watch.content.readline()  # the ADDED of the existing object: the stream is open
            touch = {"kind": "annotate", "namespace": "default", "name": "web"}
            async with http.post(f"{url}/_sim/faults", json={"write": touch, "cutWatches": True,
                                                             "compact": True}) as resp:
                assert resp.status == 200
            rest = await asyncio.wait_for(watch.content.read(), 5)
            types = [json.loads(line)["type"] for line in rest.splitlines()]
            assert types == ["MODIFIED"], "the concurrent write is seen, then the cut watch ends"
        async with http.get(f"{url}{DEPLOY}", params={"watch": "1", "resourceVersion": old_rv}) as resumed:
            frame = json.loads(await asyncio.wait_for(resumed.content.readline(), 5))
        assert (frame["type"], frame["object"]["code"], frame["object"]["reason"]) == ("ERROR", 410, "Expired")
        assert dict(faults.injected) == {"concurrent-annotate": 1, "cut-watches": 1, "compact": 1}


async def test_a_watch_410_rule_is_an_error_event_and_a_stall_waits_for_clear() -> None:
    faults = Faults()
    async with server(faults) as (url, store, audit), aiohttp.ClientSession() as http:
        create_web(store)
        spec = {"rules": [{"verb": "watch", "resource": "deployments", "code": 410},
                          {"verb": "get", "resource": "deployments", "stall": True}]}
        async with http.post(f"{url}/_sim/faults", json=spec) as resp:
            assert resp.status == 200
        async with http.get(f"{url}{DEPLOY}", params={"watch": "1"}) as watch:
            frame = json.loads(await asyncio.wait_for(watch.content.readline(), 5))
        assert (frame["type"], frame["object"]["code"]) == ("ERROR", 410)
        stalled = asyncio.create_task(http.get(f"{url}{DEPLOY}/web"))
        await asyncio.sleep(0.3)
        assert not stalled.done(), "a stalled request is not answered"
        async with http.delete(f"{url}/_sim/faults") as resp:
            assert resp.status == 200
        answer = await asyncio.wait_for(stalled, 5)
        assert answer.status == 200
        answer.release()
    assert [(r.verb, r.code) for r in audit] == [("watch", 410), ("get", 200)]


async def test_bad_fault_specs_name_the_field() -> None:
    async with server(Faults()) as (url, _, _), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/_sim/faults", json={"rules": [{"code": 418}]}) as resp:
            assert (resp.status, (await resp.json())["error"]) == (400, "rules[0].code: 418 is not one of 0, 409, "
                                                                        "410, 429, 500, 503")
        async with http.post(f"{url}/_sim/faults", json={"rules": [{"verbs": "get"}]}) as resp:
            assert (await resp.json())["error"].startswith("rules[0].verbs: unknown field")


def test_an_error_schedule_changes_the_error_share_over_time_without_a_new_revision() -> None:
    pod = {"metadata": {"name": "p", "uid": "u"},
           "spec": {"containers": [{"name": "app", "image": "backend:v1"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "app", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}}
    behaviour = behaviour_from_env({"SIM_RPS": "10", "SIM_ERROR_SCHEDULE": "0.12:25,0.01"})
    start = 1735689600.0

    def counts(at: float) -> tuple[int, int]:
        text = render_metrics(pod, start + at, behaviour=behaviour)
        values = {line.split("{")[0] + line.split('code="')[1][:3]: int(line.rsplit(" ", 1)[1])
                  for line in text.splitlines() if line.startswith("http_requests_total{")}
        return values["http_requests_total500"], values["http_requests_total200"] + values["http_requests_total500"]

    assert counts(25) == (30, 250), "12% of the first 250 requests"
    assert counts(125) == (40, 1250), "then 1% of the next 1000"
