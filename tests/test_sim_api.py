"""The simulated API server over raw HTTP: framing, status bodies, concurrency, subresources, tables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sim import openapi
from sim.apiserver import AuditRecord
from sim.resources import ALL, DEPLOYMENTS, PODS, REPLICASETS
from sim.store import Store, copy_json
from sim.strategies import apply_defaults
from tests.simkit import FakeLogs, SimCluster, deployment_manifest, make_pod, sim_server

NS = "shop"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io," \
               "application/json"


class Api:
    """A tiny JSON client over the test server."""

    def __init__(self, session: aiohttp.ClientSession, cluster: SimCluster) -> None:
        self.session = session
        self.cluster = cluster
        self.store: Store = cluster.store

    async def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                   headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        all_headers = {"Content-Type": content_type, **(headers or {})}
        async with self.session.request(method, path, data=data, headers=all_headers, params=params) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def create_deployment(self, name: str = "web", **kwargs: Any) -> dict[str, Any]:
        status, body = await self.call("POST", DEPLOYS, deployment_manifest(name, **kwargs))
        assert status == 201, body
        result: dict[str, Any] = body
        return result


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with sim_server(tmp_path, bookmark_interval=0.3) as cluster, \
            aiohttp.ClientSession(base_url=cluster.base_url) as session:
        client = Api(session, cluster)
        status, _ = await client.call("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        assert status == 201
        yield client


async def read_events(response: aiohttp.ClientResponse, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        line = await asyncio.wait_for(response.content.readline(), timeout)
        assert line.endswith(b"\n"), f"watch frames are newline-terminated: {line!r}"
        assert b"\n" not in line[:-1], f"frames are single-line JSON: {line!r}"
        assert b": " not in line, f"frames are compact JSON: {line!r}"
        events.append(json.loads(line))
    return events


# ----- discovery -----


async def test_discovery_documents(api: Api) -> None:
    status, version = await api.call("GET", "/version")
    assert (status, version["major"], version["minor"]) == (200, "1", "33")
    status, groups = await api.call("GET", "/apis")
    assert [g["name"] for g in groups["groups"]] == ["apps", "batch", "coordination.k8s.io", "events.k8s.io",
                                                 "apiextensions.k8s.io"]
    status, apps = await api.call("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["deployments"]["verbs"] == ["create", "delete", "deletecollection", "get", "list", "patch",
                                               "update", "watch"]
    assert by_name["deployments"]["shortNames"] == ["deploy"]
    assert by_name["deployments/scale"] == {"name": "deployments/scale", "singularName": "", "namespaced": True,
                                            "kind": "Scale", "verbs": ["get", "patch", "update"],
                                            "group": "autoscaling", "version": "v1"}
    status, core = await api.call("GET", "/api/v1")
    assert {"pods", "pods/log", "pods/status", "events", "namespaces", "services"} <= {
        r["name"] for r in core["resources"]}
    for path in ("/healthz", "/readyz", "/livez"):
        assert await api.call("GET", path) == (200, "ok")
    status, missing = await api.call("GET", "/apis/autoscaling/v1")
    assert (status, missing["reason"]) == (404, "NotFound")


async def test_openapi_v3_advertises_field_validation(api: Api) -> None:
    _, root = await api.call("GET", "/openapi/v3")
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    _status, doc = await api.call("GET", url)
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    schemas = doc["components"]["schemas"]
    deployment = next(s for s in schemas.values()
                      if {"group": "apps", "version": "v1", "kind": "Deployment"}
                      in s.get("x-kubernetes-group-version-kind", []))
    assert set(deployment["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    pod_spec = schemas["io.k8s.sim.V1PodSpec"]["properties"]
    assert pod_spec["containers"]["x-kubernetes-patch-merge-key"] == "name"
    assert pod_spec["volumes"]["x-kubernetes-patch-strategy"] == "merge,retainKeys"


def test_every_served_kind_has_a_schema() -> None:
    missing = [(rt.group, rt.kind) for rt in ALL if openapi.kind_schema(rt.group, rt.kind) is None]
    assert missing == []


# ----- errors -----


async def test_not_found_status_body(api: Api) -> None:
    assert await api.call("GET", f"{DEPLOYS}/web") == (404, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "web" not found', "reason": "NotFound",
        "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 404})
    status, body = await api.call("GET", "/api/v1/namespaces/shop/pods/p1")
    assert (status, body["message"], body["details"]) == (404, 'pods "p1" not found',
                                                         {"name": "p1", "group": "", "kind": "pods"})
    status, body = await api.call("GET", "/apis/apps/v1/namespaces/shop/frobs")
    assert (status, body["message"]) == (404, "the server could not find the requested resource")


async def test_create_conflicts_and_namespace_errors(api: Api) -> None:
    await api.create_deployment()
    status, body = await api.call("POST", DEPLOYS, deployment_manifest())
    assert (status, body["reason"], body["message"]) == (409, "AlreadyExists", 'deployments.apps "web" already exists')
    status, body = await api.call("POST", "/apis/apps/v1/namespaces/nope/deployments", deployment_manifest())
    assert (status, body["message"]) == (404, 'namespaces "nope" not found')
    wrong_ns = deployment_manifest("other")
    wrong_ns["metadata"]["namespace"] = "default"
    status, body = await api.call("POST", DEPLOYS, wrong_ns)
    assert (status, body["message"]) == (400, "the namespace of the provided object does not match the namespace "
                                               "sent on the request")


async def test_generate_name(api: Api) -> None:
    manifest = deployment_manifest()
    manifest["metadata"] = {"generateName": "web-", "labels": {"app": "web"}}
    status, body = await api.call("POST", DEPLOYS, manifest)
    assert status == 201
    name = body["metadata"]["name"]
    assert name.startswith("web-")
    assert len(name) == 9
    assert api.store.peek(DEPLOYMENTS, NS, name) is not None


async def test_validation_errors_are_invalid_with_causes(api: Api) -> None:
    manifest = deployment_manifest()
    manifest["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    status, body = await api.call("POST", DEPLOYS, manifest)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["message"] == ('Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: '
                               'map[string]string{"app":"other"}: `selector` does not match template `labels`')
    assert body["details"] == {"name": "web", "group": "apps", "kind": "Deployment", "causes": [
        {"reason": "FieldValueInvalid", "field": "spec.template.metadata.labels",
         "message": 'Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`'}]}

    bad_name = deployment_manifest("Web_1")
    status, body = await api.call("POST", DEPLOYS, bad_name)
    assert status == 422
    assert body["message"].startswith('Deployment.apps "Web_1" is invalid: metadata.name: Invalid value: "Web_1": '
                                      "a lowercase RFC 1123 subdomain must consist of")

    created = await api.create_deployment()
    changed = copy_json(created)
    changed["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    status, body = await api.call("PUT", f"{DEPLOYS}/web", changed)
    assert status == 422
    assert body["message"] == (
        'Deployment.apps "web" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
        'map[string]string{"app":"web", "tier":"x"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
        "field is immutable")


async def test_field_validation_strict_warn_ignore(api: Api) -> None:
    manifest = deployment_manifest()
    manifest["spec"]["template"]["spec"]["containers"][0]["imagex"] = "typo"
    status, body = await api.call("POST", DEPLOYS, manifest, params={"fieldValidation": "Strict"})
    assert (status, body["reason"], body["message"]) == (
        400, "BadRequest", 'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagex"')
    async with api.session.post(DEPLOYS, json=manifest) as response:
        assert response.status == 201
        assert response.headers["Warning"] == '299 - "unknown field \\"spec.template.spec.containers[0].imagex\\""'
        stored = await response.json()
    assert "imagex" not in stored["spec"]["template"]["spec"]["containers"][0], "unknown fields are dropped"
    wrong_type = deployment_manifest("typed")
    wrong_type["spec"]["replicas"] = "3"
    status, body = await api.call("POST", DEPLOYS, wrong_type)
    assert (status, body["message"]) == (400, 'Deployment in version "v1" cannot be handled as a Deployment: json: '
                                               "cannot unmarshal string into Go struct field DeploymentSpec.spec."
                                               "replicas of type int32")


# ----- defaults, generation, status -----


async def test_defaults_and_generation_rules(api: Api) -> None:
    created = await api.create_deployment()
    spec = created["spec"]
    assert (spec["strategy"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, 10, 600)
    assert spec["template"]["spec"] == {
        "containers": [{"name": "web", "image": "shop/web:1.0", "imagePullPolicy": "IfNotPresent", "resources": {},
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "securityContext": {}, "schedulerName": "default-scheduler"}
    assert created["metadata"]["generation"] == 1
    assert created["status"] == {}

    # Status on the main resource is ignored; the annotations count for a Deployment's generation.
    update = copy_json(created)
    update["status"] = {"replicas": 99}
    update["metadata"]["annotations"] = {"kubernetes.io/change-cause": "v1"}
    status, body = await api.call("PUT", f"{DEPLOYS}/web", update)
    assert (status, body["metadata"]["generation"], body["status"]) == (200, 2, {})

    # /status keeps the spec and labels, takes annotations, never bumps generation.
    status_update = copy_json(body)
    status_update["status"] = {"observedGeneration": 2, "replicas": 3}
    status_update["spec"]["replicas"] = 7
    status_update["metadata"]["labels"] = {"app": "hijacked"}
    status_update["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    status, body = await api.call("PUT", f"{DEPLOYS}/web/status", status_update)
    assert status == 200
    assert (body["spec"]["replicas"], body["metadata"]["labels"], body["metadata"]["generation"]) == (
        3, {"app": "web"}, 2)
    assert body["status"] == {"observedGeneration": 2, "replicas": 3}
    assert body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    # An unchanged write is a no-op: same resourceVersion.
    status, again = await api.call("PUT", f"{DEPLOYS}/web", body)
    assert (status, again["metadata"]["resourceVersion"]) == (200, body["metadata"]["resourceVersion"])


async def test_apply_defaults_makes_templates_compare_equal() -> None:
    """A ReplicaSet template copied from a defaulted Deployment and defaulted again is unchanged."""
    deploy = deployment_manifest()
    apply_defaults(DEPLOYMENTS, deploy)
    rs = {"metadata": {"name": "web-1"}, "spec": {"replicas": 1, "selector": deploy["spec"]["selector"],
                                                  "template": copy_json(deploy["spec"]["template"])}}
    apply_defaults(REPLICASETS, rs)
    assert rs["spec"]["template"] == deploy["spec"]["template"]
    pod = {"metadata": {"name": "p"}, "spec": copy_json(deploy["spec"]["template"]["spec"])}
    apply_defaults(PODS, pod)
    assert pod["spec"]["enableServiceLinks"] is True
    latest = {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:latest"},
                                      {"name": "c", "image": "reg:5000/nginx@sha256:abc"}]}}
    apply_defaults(PODS, latest)
    assert [c["imagePullPolicy"] for c in latest["spec"]["containers"]] == ["Always", "Always", "IfNotPresent"]


# ----- optimistic concurrency and patches -----


async def test_put_with_stale_resource_version_conflicts(api: Api) -> None:
    created = await api.create_deployment()
    first = copy_json(created)
    first["spec"]["replicas"] = 4
    assert (await api.call("PUT", f"{DEPLOYS}/web", first))[0] == 200
    stale = copy_json(created)
    stale["spec"]["replicas"] = 5
    assert await api.call("PUT", f"{DEPLOYS}/web", stale) == (409, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please '
                   "apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 409})
    unconditional = copy_json(created)
    del unconditional["metadata"]["resourceVersion"]
    unconditional["spec"]["replicas"] = 6
    status, body = await api.call("PUT", f"{DEPLOYS}/web", unconditional)
    assert (status, body["spec"]["replicas"]) == (200, 6)


async def test_patch_content_types(api: Api) -> None:
    created = await api.create_deployment()
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", {"spec": {"paused": True}},
                                  content_type="application/strategic-merge-patch+json")
    assert (status, body["spec"]["paused"], body["metadata"]["generation"]) == (200, True, 2)
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", {"metadata": {"annotations": {"a": "b"}}},
                                  content_type="application/merge-patch+json")
    assert (status, body["metadata"]["annotations"]) == (200, {"a": "b"})
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", [{"op": "replace", "path": "/spec/replicas",
                                                               "value": 1}],
                                  content_type="application/json-patch+json")
    assert (status, body["spec"]["replicas"]) == (200, 1)
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", [{"op": "replace", "path": "/spec/nothing",
                                                               "value": 1}],
                                  content_type="application/json-patch+json")
    assert (status, body["reason"], body["message"]) == (
        422, "Invalid", "replace operation does not apply: doc is missing key: /spec/nothing: missing value")
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", "apiVersion: apps/v1",
                                  content_type="application/apply-patch+yaml")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert body["message"] == ("the body of the request was in an unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/strategic-merge-patch+json")
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"replicas": 9}}
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", stale, content_type="application/merge-patch+json")
    assert (status, body["reason"]) == (409, "Conflict")


async def test_dry_run_stores_nothing(api: Api) -> None:
    before = api.store.resource_version
    status, body = await api.call("POST", DEPLOYS, deployment_manifest(), params={"dryRun": "All"})
    assert (status, body["metadata"]["name"], body["spec"]["revisionHistoryLimit"]) == (201, "web", 10)
    assert api.store.peek(DEPLOYMENTS, NS, "web") is None
    created = await api.create_deployment()
    status, body = await api.call("PATCH", f"{DEPLOYS}/web", {"spec": {"replicas": 0}},
                                  content_type="application/merge-patch+json", params={"dryRun": "All"})
    assert (status, body["spec"]["replicas"]) == (200, 0)
    status, body = await api.call("DELETE", f"{DEPLOYS}/web", params={"dryRun": "All"})
    assert status == 200
    stored = api.store.peek(DEPLOYMENTS, NS, "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 3
    assert api.store.resource_version == before + 1, "only the real create changed the store"
    assert created["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


async def test_scale_subresource(api: Api) -> None:
    created = await api.create_deployment()
    status, scale = await api.call("GET", f"{DEPLOYS}/web/scale")
    assert (status, scale) == (200, {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: created["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                         "creationTimestamp")},
        "spec": {"replicas": 3}, "status": {"replicas": 0, "selector": "app=web"}})
    status, scale = await api.call("PATCH", f"{DEPLOYS}/web/scale", {"spec": {"replicas": 5}},
                                   content_type="application/merge-patch+json")
    assert (status, scale["spec"]["replicas"]) == (200, 5)
    stored = api.store.peek(DEPLOYMENTS, NS, "web")
    assert stored is not None
    assert (stored["spec"]["replicas"], stored["metadata"]["generation"]) == (5, 2)
    scale["spec"]["replicas"] = -1
    status, body = await api.call("PUT", f"{DEPLOYS}/web/scale", scale)
    assert (status, body["message"]) == (422, 'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: '
                                              "-1: must be greater than or equal to 0")


# ----- lists -----


async def test_list_selectors_and_metadata(api: Api) -> None:
    await api.create_deployment("web", labels={"app": "web", "tier": "frontend"})
    await api.create_deployment("api", labels={"app": "api", "tier": "backend"})
    status, body = await api.call("GET", DEPLOYS, params={"labelSelector": "tier in (frontend)"})
    assert (status, body["kind"], body["apiVersion"]) == (200, "DeploymentList", "apps/v1")
    assert [i["metadata"]["name"] for i in body["items"]] == ["web"]
    assert body["items"][0]["kind"] == "Deployment"
    assert body["metadata"]["resourceVersion"] == str(api.store.resource_version)
    status, body = await api.call("GET", "/apis/apps/v1/deployments", params={"fieldSelector": "metadata.name=api"})
    assert [i["metadata"]["name"] for i in body["items"]] == ["api"]
    status, body = await api.call("GET", DEPLOYS, params={"labelSelector": "tier in frontend"})
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = await api.call("GET", DEPLOYS, params={"fieldSelector": "spec.replicas=3"})
    assert (status, body["message"]) == (400, "field label not supported: spec.replicas")


async def test_limit_and_continue(api: Api) -> None:
    for index in range(5):
        status, _ = await api.call("POST", f"/api/v1/namespaces/{NS}/configmaps",
                                   {"metadata": {"name": f"cm-{index}"}, "data": {"i": str(index)}})
        assert status == 201
    names: list[str] = []
    token = ""
    pages = 0
    first_rv = ""
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        status, body = await api.call("GET", f"/api/v1/namespaces/{NS}/configmaps", params=params)
        assert status == 200
        first_rv = first_rv or body["metadata"]["resourceVersion"]
        assert body["metadata"]["resourceVersion"] == first_rv, "every page reports the first page's RV"
        names += [i["metadata"]["name"] for i in body["items"]]
        pages += 1
        token = body["metadata"].get("continue", "")
        if pages == 1:
            assert body["metadata"]["remainingItemCount"] == 3
        if not token:
            break
    assert (names, pages) == ([f"cm-{i}" for i in range(5)], 3)
    status, body = await api.call("GET", f"/api/v1/namespaces/{NS}/configmaps", params={"continue": "garbage"})
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_expired_continue_token_is_410(tmp_path: Path) -> None:
    async with sim_server(tmp_path, history_size=3) as cluster, \
            aiohttp.ClientSession(base_url=cluster.base_url) as session:
        api = Api(session, cluster)
        for index in range(3):
            await api.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{index}"}})
        status, body = await api.call("GET", "/api/v1/namespaces/default/configmaps", params={"limit": "1"})
        token = body["metadata"]["continue"]
        for index in range(5):
            await api.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"d{index}"}})
        status, body = await api.call("GET", "/api/v1/namespaces/default/configmaps", params={"continue": token})
        assert (status, body["reason"]) == (410, "Expired")
        assert body["message"].startswith("The provided continue parameter is too old")


async def test_table_output_for_deployments(api: Api) -> None:
    await api.create_deployment()
    status, table = await api.call("GET", DEPLOYS, headers={"Accept": TABLE_ACCEPT})
    assert (status, table["kind"], table["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert [(c["name"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0), ("Containers", 1),
        ("Images", 1), ("Selector", 1)]
    row = table["rows"][0]
    assert row["cells"][:4] == ["web", "0/3", 0, 0]
    assert row["cells"][5:] == ["web", "shop/web:1.0", "app=web"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "web"
    status, table = await api.call("GET", DEPLOYS, headers={"Accept": TABLE_ACCEPT},
                                   params={"includeObject": "Object"})
    assert table["rows"][0]["object"]["spec"]["replicas"] == 3


async def test_large_lists_are_quick(api: Api) -> None:
    """2,000 Deployments with 3 pods each: listing every pod takes well under a second or two."""
    store = api.store
    for index in range(2000):
        name = f"app-{index}"
        manifest = deployment_manifest(name)
        apply_defaults(DEPLOYMENTS, manifest)
        store.create(DEPLOYMENTS, manifest, namespace=NS)
        for replica in range(3):
            pod = {"metadata": {"name": f"{name}-{replica}", "labels": {"app": name}},
                   "spec": copy_json(manifest["spec"]["template"]["spec"]), "status": {"phase": "Running"}}
            apply_defaults(PODS, pod)
            store.create(PODS, pod, namespace=NS)
    started = time.perf_counter()
    status, body = await api.call("GET", f"/api/v1/namespaces/{NS}/pods")
    first = time.perf_counter() - started
    assert (status, len(body["items"])) == (200, 6000)
    started = time.perf_counter()
    status, body = await api.call("GET", f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": "app=app-7"})
    assert [p["metadata"]["name"] for p in body["items"]] == ["app-7-0", "app-7-1", "app-7-2"]
    started = time.perf_counter()
    status, table = await api.call("GET", DEPLOYS, headers={"Accept": TABLE_ACCEPT})
    assert len(table["rows"]) == 2000
    assert first < 3.0, f"listing 6,000 pods took {first:.2f}s"
    assert time.perf_counter() - started < 3.0


# ----- watch -----


async def test_watch_framing_and_resume(api: Api) -> None:
    created = await api.create_deployment()
    async with api.session.get(DEPLOYS, params={"watch": "true"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Transfer-Encoding"] == "chunked"
        [added] = await read_events(response, 1)
        assert (added["type"], added["object"]["kind"], added["object"]["metadata"]["name"]) == (
            "ADDED", "Deployment", "web")
        await api.call("PATCH", f"{DEPLOYS}/web", {"spec": {"replicas": 4}},
                       content_type="application/merge-patch+json")
        [modified] = await read_events(response, 1)
        assert (modified["type"], modified["object"]["spec"]["replicas"]) == ("MODIFIED", 4)
    # Resuming from the create's resourceVersion replays exactly what came after it.
    rv = created["metadata"]["resourceVersion"]
    async with api.session.get(DEPLOYS, params={"watch": "1", "resourceVersion": rv}) as response:
        await api.call("DELETE", f"{DEPLOYS}/web")
        events = await read_events(response, 2)
        assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
        assert events[1]["object"]["spec"]["replicas"] == 4, "DELETED carries the last state"


async def test_watch_too_old_resource_version_gets_one_error_event(tmp_path: Path) -> None:
    async with sim_server(tmp_path, history_size=2) as cluster, \
            aiohttp.ClientSession(base_url=cluster.base_url) as session:
        api = Api(session, cluster)
        for index in range(4):
            await api.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{index}"}})
        async with session.get("/api/v1/namespaces/default/configmaps",
                               params={"watch": "True", "resourceVersion": "2"}) as response:
            assert response.status == 200
            body = await asyncio.wait_for(response.read(), 5)
        oldest = cluster.store.resource_version - 1
        assert body == (b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                        b'"message":"too old resource version: 2 (' + str(oldest).encode() + b')","reason":"Expired",'
                        b'"code":410}}\n')


async def test_watch_bookmarks_and_timeout(api: Api) -> None:
    await api.create_deployment()
    params = {"watch": "true", "resourceVersion": str(api.store.resource_version), "allowWatchBookmarks": "true",
              "timeoutSeconds": "1"}
    async with api.session.get(DEPLOYS, params=params) as response:
        started = time.monotonic()
        [bookmark] = await read_events(response, 1)
        assert bookmark == {"type": "BOOKMARK", "object": {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {
            "resourceVersion": str(api.store.resource_version)}}}
        rest = await asyncio.wait_for(response.read(), 5)
        assert b"ERROR" not in rest, "timeoutSeconds ends the stream cleanly"
        assert 0.8 < time.monotonic() - started < 3


async def test_watch_send_initial_events(api: Api) -> None:
    await api.create_deployment("a")
    await api.create_deployment("b")
    list_rv = str(api.store.resource_version)
    params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
              "allowWatchBookmarks": "true"}
    async with api.session.get(DEPLOYS, params=params) as response:
        events = await read_events(response, 3)
        assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
            ("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)]
        assert events[2]["object"] == {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {
            "resourceVersion": list_rv, "annotations": {"k8s.io/initial-events-end": "true"}}}
        await api.call("DELETE", f"{DEPLOYS}/a")
        [deleted] = await read_events(response, 1)
        assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "a")
    status, body = await api.call("GET", DEPLOYS, params={"watch": "true", "sendInitialEvents": "true"})
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == ('ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                               "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to "
                               "NotOlderThan")


async def test_cluster_wide_watch_and_selector_transitions(api: Api) -> None:
    await api.create_deployment("web", labels={"app": "web", "watched": "yes"})
    async with api.session.get("/apis/apps/v1/deployments",
                               params={"watch": "1", "labelSelector": "watched=yes"}) as response:
        [added] = await read_events(response, 1)
        assert (added["type"], added["object"]["metadata"]["namespace"]) == ("ADDED", NS)
        await api.call("PATCH", f"{DEPLOYS}/web", {"metadata": {"labels": {"watched": "no"}}},
                       content_type="application/merge-patch+json")
        await api.call("PATCH", f"{DEPLOYS}/web", {"spec": {"replicas": 1}},
                       content_type="application/merge-patch+json")
        await api.call("PATCH", f"{DEPLOYS}/web", {"metadata": {"labels": {"watched": "yes"}}},
                       content_type="application/merge-patch+json")
        events = await read_events(response, 2)
        assert [(e["type"], e["object"]["metadata"]["labels"]["watched"]) for e in events] == [
            ("DELETED", "no"), ("ADDED", "yes")]


async def test_table_watch_for_kubectl_get_watch(api: Api) -> None:
    await api.create_deployment()
    params = {"watch": "true", "resourceVersion": str(api.store.resource_version)}
    async with api.session.get(DEPLOYS, params=params, headers={"Accept": TABLE_ACCEPT}) as response:
        await api.call("PATCH", f"{DEPLOYS}/web", {"spec": {"replicas": 2}},
                       content_type="application/merge-patch+json")
        [event] = await read_events(response, 1)
        assert (event["type"], event["object"]["kind"]) == ("MODIFIED", "Table")
        assert event["object"]["rows"][0]["cells"][:2] == ["web", "0/2"]


# ----- deletes -----


def owned(kind: str, name: str, owner: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "ownerReferences": [
        {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
         "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]}}


async def test_delete_cascades_in_the_background(api: Api) -> None:
    deploy = await api.create_deployment()
    rs = owned("ReplicaSet", "web-abc", deploy, {"app": "web"})
    rs["spec"] = {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": deploy["spec"]["template"]}
    stored_rs = api.store.create(REPLICASETS, rs, namespace=NS)
    pod = owned("Pod", "web-abc-1", stored_rs, {"app": "web"})
    pod["spec"] = copy_json(deploy["spec"]["template"]["spec"])
    api.store.create(PODS, pod, namespace=NS)
    status, body = await api.call("DELETE", f"{DEPLOYS}/web", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                               "propagationPolicy": "Background"})
    assert (status, body) == (200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                    "details": {"name": "web", "group": "apps", "kind": "deployments",
                                                "uid": deploy["metadata"]["uid"]}})
    assert api.store.list_objects(REPLICASETS, NS)[0] == []
    assert api.store.list_objects(PODS, NS)[0] == []


async def test_delete_orphan_keeps_dependents(api: Api) -> None:
    deploy = await api.create_deployment()
    rs = owned("ReplicaSet", "web-abc", deploy, {"app": "web"})
    rs["spec"] = {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": deploy["spec"]["template"]}
    api.store.create(REPLICASETS, rs, namespace=NS)
    status, _ = await api.call("DELETE", f"{DEPLOYS}/web", params={"propagationPolicy": "Orphan"})
    assert status == 200
    [orphan] = api.store.list_objects(REPLICASETS, NS)[0]
    assert "ownerReferences" not in orphan["metadata"]


async def test_delete_namespace_removes_its_objects(api: Api) -> None:
    await api.create_deployment()
    status, body = await api.call("DELETE", f"/api/v1/namespaces/{NS}")
    assert (status, body["kind"], body["status"]) == (200, "Namespace", {"phase": "Terminating"})
    assert api.store.list_objects(DEPLOYMENTS, NS)[0] == []
    status, body = await api.call("GET", f"/api/v1/namespaces/{NS}")
    assert (status, body["message"]) == (404, f'namespaces "{NS}" not found')


async def test_start_namespaces_exist(api: Api) -> None:
    _status, body = await api.call("GET", "/api/v1/namespaces")
    assert [n["metadata"]["name"] for n in body["items"]] == ["default", "kube-node-lease", "kube-public",
                                                              "kube-system", NS]
    assert body["items"][0]["status"] == {"phase": "Active"}


# ----- events -----


async def test_events_are_two_views_of_one_storage(api: Api) -> None:
    deploy = await api.create_deployment()
    core_event = {
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Deployment", "namespace": NS, "name": "web", "uid": deploy["metadata"]["uid"],
                           "apiVersion": "apps/v1"},
        "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-1 to 3", "type": "Normal",
        "source": {"component": "deployment-controller"}, "count": 1,
        "firstTimestamp": "2025-03-01T10:00:00Z", "lastTimestamp": "2025-03-01T10:00:00+00:00"}
    status, created = await api.call("POST", f"/api/v1/namespaces/{NS}/events", core_event)
    assert (status, created["lastTimestamp"]) == (201, "2025-03-01T10:00:00Z"), "timestamps are normalised"
    status, v1 = await api.call("GET", f"/apis/events.k8s.io/v1/namespaces/{NS}/events/web.1")
    assert status == 200
    assert (v1["apiVersion"], v1["regarding"]["name"], v1["note"], v1["deprecatedCount"],
            v1["deprecatedSource"], v1["deprecatedFirstTimestamp"]) == (
        "events.k8s.io/v1", "web", "Scaled up replica set web-1 to 3", 1, {"component": "deployment-controller"},
        "2025-03-01T10:00:00Z")

    new_event = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.2"},
                 "eventTime": "2025-03-01T10:05:00.123456Z", "reportingController": "rollguard",
                 "reportingInstance": "rollguard-0", "action": "Rollback", "reason": "RolledBack",
                 "note": "rolled back to revision 1", "type": "Warning",
                 "regarding": {"kind": "Deployment", "namespace": NS, "name": "web"}}
    status, created = await api.call("POST", f"/apis/events.k8s.io/v1/namespaces/{NS}/events", new_event)
    assert (status, created["note"]) == (201, "rolled back to revision 1")
    status, core_list = await api.call("GET", f"/api/v1/namespaces/{NS}/events",
                                       params={"fieldSelector": "involvedObject.name=web,reason=RolledBack"})
    [core] = core_list["items"]
    assert (core["apiVersion"], core["message"], core["reportingComponent"], core["eventTime"]) == (
        "v1", "rolled back to revision 1", "rollguard", "2025-03-01T10:05:00.123456Z")
    status, body = await api.call("POST", f"/apis/events.k8s.io/v1/namespaces/{NS}/events",
                                  {"metadata": {"name": "bad"}, "type": "Normal"})
    assert status == 422
    assert body["message"].startswith('Event.events.k8s.io "bad" is invalid: [eventTime: Required value, '
                                      "reportingController: Required value")


# ----- pod logs -----


async def test_pod_logs(tmp_path: Path) -> None:
    logs = FakeLogs()
    async with sim_server(tmp_path, logs=logs) as cluster, \
            aiohttp.ClientSession(base_url=cluster.base_url) as session:
        api = Api(session, cluster)
        make_pod(cluster.store, "single", ["web"])
        make_pod(cluster.store, "double", ["web", "sidecar"])
        base = "/api/v1/namespaces/default/pods"
        async with session.get(f"{base}/single/log", params={"tailLines": "2"}) as response:
            assert (response.status, response.headers["Content-Type"]) == (200, "text/plain")
            assert await response.text() == "two\nthree\n"
        assert await api.call("GET", f"{base}/double/log", params={"container": "sidecar", "timestamps": "true"}) \
            == (200, "2025-03-01T10:00:00Z envoy ready\n")
        assert await api.call("GET", f"{base}/single/log", params={"limitBytes": "5"}) == (200, "one\nt")
        status, body = await api.call("GET", f"{base}/double/log")
        assert (status, body["message"]) == (400, "a container name must be specified for pod double, choose one "
                                                  "of: [web sidecar]")
        status, body = await api.call("GET", f"{base}/single/log", params={"sinceSeconds": "10",
                                                                          "sinceTime": "2025-03-01T10:00:00Z"})
        assert (status, body["message"]) == (400, "at most one of `sinceTime` or `sinceSeconds` may be specified")
        status, body = await api.call("GET", f"{base}/single/log", params={"container": "nope"})
        assert (status, body["message"]) == (400, "container nope is not valid for pod single")
        async with session.get(f"{base}/single/log", params={"follow": "true"}) as response:
            assert await asyncio.wait_for(response.content.readline(), 5) == b"one\n"
            await response.content.readline()
            await response.content.readline()
            logs.more.put_nowait("four")
            assert await asyncio.wait_for(response.content.readline(), 5) == b"four\n"
            logs.more.put_nowait(None)
            assert await asyncio.wait_for(response.read(), 5) == b""


async def test_pod_logs_without_a_source(api: Api) -> None:
    make_pod(api.store, "p", ["web"])
    status, body = await api.call("GET", "/api/v1/namespaces/default/pods/p/log")
    assert (status, body["reason"], body["message"]) == (
        404, "NotFound", 'the simulated cluster has no pod log source: logs of pod "p" are not available')


# ----- audit -----


async def test_audit_records_rbac_verbs(api: Api) -> None:
    api.cluster.audit.clear()
    await api.create_deployment()
    await api.call("GET", f"{DEPLOYS}/web")
    await api.call("GET", DEPLOYS)
    async with api.session.get(DEPLOYS, params={"watch": "1", "timeoutSeconds": "1"}) as response:
        await response.read()
    await api.call("PATCH", f"{DEPLOYS}/web/scale", {"spec": {"replicas": 1}},
                   content_type="application/merge-patch+json")
    await api.call("PUT", f"{DEPLOYS}/web/status", api.store.get(DEPLOYMENTS, NS, "web"))
    await api.call("DELETE", f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": "app=x"})
    await api.call("DELETE", f"{DEPLOYS}/web")
    await api.call("GET", "/apis")
    await asyncio.sleep(0.05)
    assert api.cluster.audit == [
        AuditRecord("create", "apps", "deployments", "", NS, "", 201),
        AuditRecord("get", "apps", "deployments", "", NS, "web", 200),
        AuditRecord("list", "apps", "deployments", "", NS, "", 200),
        AuditRecord("watch", "apps", "deployments", "", NS, "", 200),
        AuditRecord("patch", "apps", "deployments", "scale", NS, "web", 200),
        AuditRecord("update", "apps", "deployments", "status", NS, "web", 200),
        AuditRecord("deletecollection", "", "pods", "", NS, "", 200),
        AuditRecord("delete", "apps", "deployments", "", NS, "web", 200),
    ]
