"""The API server's service proxy, and `rollguard get` reading the daemon through it.

First the simulated API server's proxy on its own (`sim.proxy`): a selector-less Service stands for a
process on this machine (`127.0.0.1:<targetPort>`); the answer is relayed as it is, errors are the real
server's Status objects, and the real `kubectl get --raw` reads through it. Then end to end: a daemon
behind a Service `rollguard/rollguard`, `rollguard get` without `--server` shows its live analysis (the
signal readings and timers the state annotation does not hold) and says so on its first line; with the
Service deleted, or the daemon stopped, it falls back to the annotations and says why.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sim.apiserver import AuditRecord
from sim.demo.stack import Stack, free_port, running_stack
from sim.resources import SERVICES
from sim.strategies import apply_defaults, prepare_create
from tests.e2ekit import RULES, deploy, eventually, revision_of, rollguard_cli, serving_v1
from tests.simkit import KUBECTL_BINARIES, SYSTEM_KUBECTL, VENV_KUBECTL, SimCluster, run_kubectl, sim_server

TOKEN = "Bearer s3cr3t-user-token"


async def _echo(request: web.Request) -> web.Response:
    """What the backend received, in a body of its own content type, with a header of its own."""
    seen = {"method": request.method, "path": request.raw_path, "body": (await request.read()).decode(),
            "authorization": request.headers.get("Authorization"), "accept": request.headers.get("Accept"),
            "forwardedFor": request.headers.get("X-Forwarded-For")}
    return web.Response(status=201 if request.method == "POST" else 200, body=json.dumps(seen).encode(),
                        content_type="application/vnd.echo+json", headers={"X-Backend": "echo"})


async def _teapot(request: web.Request) -> web.Response:
    return web.Response(status=418, text="short and stout", headers={"Retry-After": "7"})


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """A small HTTP server on 127.0.0.1: the port of the selector-less Services below."""
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_get("/teapot", _teapot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def _add_service(cluster: SimCluster, name: str, ports: list[dict[str, Any]], selector: dict[str, str] | None = None
                 ) -> None:
    spec: dict[str, Any] = {"ports": ports, **({"selector": selector} if selector else {})}
    service: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": name, "namespace": "default"}, "spec": spec}
    apply_defaults(SERVICES, service)
    prepare_create(SERVICES, service, cluster.store)
    cluster.store.create(SERVICES, service)


@pytest.fixture
async def cluster(tmp_path: Path, backend: int) -> AsyncIterator[SimCluster]:
    """The API server with Services `echo` (port 80 `web` → the backend), `down` (→ a closed port),
    `named` (a named targetPort, no selector) and `pods` (a selector, no workload server)."""
    async with sim_server(tmp_path) as server:
        _add_service(server, "echo", [{"name": "web", "port": 80, "targetPort": backend}])
        _add_service(server, "down", [{"name": "web", "port": 80, "targetPort": free_port()}])
        _add_service(server, "named", [{"name": "web", "port": 80, "targetPort": "http"}])
        _add_service(server, "pods", [{"port": 80}], selector={"app": "web"})
        yield server


def _proxy_url(cluster: SimCluster, service_id: str, path: str) -> str:
    return f"{cluster.base_url}/api/v1/namespaces/default/services/{service_id}/proxy{path}"


@pytest.mark.parametrize("service_id", ["echo:web", "echo:80", "http:echo:web", "http:echo:80"])
async def test_the_proxy_relays_status_headers_and_body_of_the_backend(cluster: SimCluster, service_id: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(_proxy_url(cluster, service_id, "/echo/a%2Fb/?x=1&y=two"),
                               headers={"Authorization": TOKEN, "Accept": "application/json"}) as response:
            assert (response.status, response.content_type, response.headers.get("X-Backend")) == \
                (200, "application/vnd.echo+json", "echo")
            got = json.loads(await response.read())
        assert got == {"method": "GET", "path": "/echo/a%2Fb/?x=1&y=two", "body": "", "authorization": None,
                       "accept": "application/json", "forwardedFor": "127.0.0.1"}, \
            "path and query as sent, the user's token not passed on"
        async with session.post(_proxy_url(cluster, service_id, "/echo/items"), data=b'{"a": 1}',
                                headers={"Authorization": TOKEN}) as response:
            assert response.status == 201
            assert json.loads(await response.read())["body"] == '{"a": 1}'
        async with session.get(_proxy_url(cluster, service_id, "/teapot")) as response:
            assert (response.status, await response.text(), response.headers.get("Retry-After")) == \
                (418, "short and stout", "7"), "the backend's own error status is relayed, not turned into a Status"
    records = [r for r in cluster.audit if r.subresource == "proxy"]
    assert records == [AuditRecord("get", "", "services", "proxy", "default", service_id, 200),
                       AuditRecord("create", "", "services", "proxy", "default", service_id, 201),
                       AuditRecord("get", "", "services", "proxy", "default", service_id, 418)]


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code, **({"details": details} if details else {})}


@pytest.mark.parametrize(("service_id", "expected"), [
    ("a:b:c:d", _status(400, "BadRequest", 'invalid service request "a:b:c:d"')),
    ("ftp:echo:web", _status(400, "BadRequest", 'invalid service request "ftp:echo:web"')),
    ("missing:web", _status(404, "NotFound", 'endpoints "missing" not found',
                            {"name": "missing", "kind": "endpoints"})),
    ("missing:80", _status(404, "NotFound", 'services "missing" not found',
                           {"name": "missing", "group": "", "kind": "services"})),
    ("echo:81", _status(503, "ServiceUnavailable", 'no service port 81 found for service "echo"')),
    ("echo:http", _status(503, "ServiceUnavailable", 'no endpoints available for service "echo"')),
    ("echo", _status(503, "ServiceUnavailable", 'no endpoints available for service "echo"')),
    ("named:web", _status(503, "ServiceUnavailable", 'no endpoints available for service "named"')),
    ("pods", _status(503, "ServiceUnavailable", 'no endpoints available for service "pods"')),
])
async def test_the_proxy_answers_like_the_real_server_when_there_is_no_backend(
        cluster: SimCluster, service_id: str, expected: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.get(_proxy_url(cluster, service_id, "/echo/x")) as response:
        assert (response.status, response.content_type, await response.json()) == \
            (expected["code"], "application/json", expected)


async def test_the_proxy_says_which_address_did_not_answer(cluster: SimCluster) -> None:
    port = (cluster.store.peek(SERVICES, "default", "down") or {})["spec"]["ports"][0]["targetPort"]
    async with aiohttp.ClientSession() as session, session.get(_proxy_url(cluster, "down:web", "/")) as response:
        assert (response.status, await response.json()) == (503, _status(
            503, "ServiceUnavailable",
            f"error trying to reach service: dial tcp 127.0.0.1:{port}: connect: connection refused"))


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTL_BINARIES)
async def test_kubectl_get_raw_reads_through_the_proxy(cluster: SimCluster, kubectl: Path) -> None:
    result = await run_kubectl(kubectl, cluster.kubeconfig, "get", "--raw",
                               "/api/v1/namespaces/default/services/echo:web/proxy/echo/hello?x=1", home=cluster.home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/echo/hello?x=1"
    port = (cluster.store.peek(SERVICES, "default", "down") or {})["spec"]["ports"][0]["targetPort"]
    refused = await run_kubectl(kubectl, cluster.kubeconfig, "get", "--raw",
                                "/api/v1/namespaces/default/services/down:web/proxy/", home=cluster.home)
    assert (refused.returncode, refused.stderr.strip()) == (1, "Error from server (ServiceUnavailable): error trying "
                                                               f"to reach service: dial tcp 127.0.0.1:{port}: connect: "
                                                               "connection refused")
    missing = await run_kubectl(kubectl, cluster.kubeconfig, "get", "--raw",
                                "/api/v1/namespaces/default/services/missing:web/proxy/", home=cluster.home)
    assert (missing.returncode, missing.stderr.strip()) == (1, 'Error from server (NotFound): endpoints "missing" '
                                                               "not found")


# ----- end to end: `rollguard get` without --server -----

LIVE_NOTE = "(the daemon, through the API server's service proxy: rollguard/rollguard:http-metrics)"


def _daemon_service(stack: Stack) -> dict[str, Any]:
    """The chart's Service in front of the daemon, without a selector: its endpoint is the daemon's port here."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "rollguard", "namespace": "rollguard"},
            "spec": {"ports": [{"name": "http-metrics", "port": 8080,
                                "targetPort": stack.settings.http_listen.port}]}}


async def _get_until(stack: Stack, predicate: Callable[[str], bool], *, what: str, timeout: float = 30) -> str:
    """`rollguard get staging/backend` (the kubeconfig, no `--server`), run until its output satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = await rollguard_cli("get", "staging/backend", "--kubeconfig", str(stack.cluster.kubeconfig))
        assert code == 0, err
        if predicate(out):
            return out
        assert time.monotonic() < deadline, f"{what}: not seen in {timeout}s; last output:\n{out}"


@pytest.mark.prometheus
@pytest.mark.kubectl
@pytest.mark.timeout(120)
async def test_rollguard_get_reads_the_daemon_through_the_service_proxy_and_falls_back_without_it(
        tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await stack.kubectl("create", "namespace", "rollguard")
        await stack.apply(_daemon_service(stack))
        await deploy(stack, "backend:v2")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

        # What only the daemon knows: the readings of each signal, the evaluations and the time left.
        live = await _get_until(stack, lambda out: bool(re.search(r"^  error_rate +0\.\d+ ", out, re.MULTILINE)),
                                what="revision 2's live readings")
        assert live.splitlines()[0] == LIVE_NOTE, live
        assert re.search(r"^staging/backend  revision 2  analysing  \(policy \S+\)$", live, re.MULTILINE), live
        assert re.search(r"^  timing     evaluations \d+ · next in \d+s · bake time left \d+s$", live,
                         re.MULTILINE), live

        # The same document with the real kubectl, and a pod's answer through the backend Service's selector.
        for kubectl in [k for k in (SYSTEM_KUBECTL, VENV_KUBECTL) if k.exists()]:
            raw = await stack.kubectl("get", "--raw", "/api/v1/namespaces/rollguard/services/rollguard:8080/proxy"
                                      "/api/v2/analyses", binary=str(kubectl))
            document = json.loads(raw)
            assert document["kind"] == "AnalysisList", raw
            assert [(i["deployment"], i["revision"], i["live"]) for i in document["items"]
                    if i["revision"] == 2] == [("backend", 2, True)], raw
            health = await stack.kubectl("get", "--raw", "/api/v1/namespaces/staging/services/backend:http/proxy"
                                         "/health", binary=str(kubectl))
            assert json.loads(health) == {"status": "ok"}

        # The Service gone: the state annotation, and the first line says why.
        await stack.kubectl("delete", "service", "rollguard", "-n", "rollguard")
        fallback = await _get_until(stack, lambda out: "state annotation" in out, what="the fallback")
        assert fallback.splitlines()[0] == "(the cluster's state annotations (daemon unreachable: 404 NotFound: " \
                                           'endpoints "rollguard" not found))', fallback
        assert "staging/backend  revision 2  analysing  (from the state annotation" in fallback, fallback
        assert "timing" not in fallback, "no timers in the annotation"
        assert "error_rate" not in fallback, "no readings in the annotation"

        # The Service back but the daemon stopped: the address that did not answer.
        await stack.apply(_daemon_service(stack))
        await stack.stop_daemon()
        refused = await _get_until(stack, lambda out: "state annotation" in out, what="the fallback")
        port = stack.settings.http_listen.port
        assert refused.splitlines()[0] == "(the cluster's state annotations (daemon unreachable: 503 " \
                                          "ServiceUnavailable: error trying to reach service: dial tcp " \
                                          f"127.0.0.1:{port}: connect: connection refused))", refused
