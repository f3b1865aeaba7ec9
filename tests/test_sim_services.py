"""In-cluster Service routing over real HTTP: the workload server as a proxy, plain routes, WebSockets."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sim.resources import PODS
from sim.services import POD_HEADER, WorkloadServer, parse_cluster_host, sim_client_session_kwargs
from sim.store import Store
from tests.promkit import make_pod, make_service, set_ready

FAST = {"SIM_LATENCY_MS": "1"}


@pytest.fixture
async def proxied(server: WorkloadServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends every request through the simulator, as the daemon's smoke checks must."""
    async with aiohttp.ClientSession(**sim_client_session_kwargs(server.url)) as session:
        yield session


@pytest.fixture
def backend(store: Store) -> list[str]:
    """Service backend.staging:8000 with three Ready pods."""
    make_service(store, "staging", "backend")
    names = [f"backend-5d8f7c9b4-{suffix}" for suffix in ("aaaaa", "bbbbb", "ccccc")]
    for name in names:
        make_pod(store, "staging", name, env=FAST)
    return names


# ----- host names -----

@pytest.mark.parametrize(("host", "expected"), [
    ("backend.staging", ("backend", "staging", False)),
    ("backend.staging.svc", ("backend", "staging", True)),
    ("Backend.Staging.svc.cluster.local.", ("backend", "staging", True)),
    ("backend", None),
    ("backend.staging.svc.cluster", None),
    ("a.b.c", None),
    ("under_score.staging", None),
])
def test_in_cluster_host_names(host: str, expected: tuple[str, str, bool] | None) -> None:
    assert parse_cluster_host(host) == expected


# ----- through the proxy -----

@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("host", ["backend.staging", "backend.staging.svc", "backend.staging.svc.cluster.local"])
async def test_health_through_the_proxy(proxied: aiohttp.ClientSession, host: str) -> None:
    async with proxied.get(f"http://{host}:8000/health") as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        assert resp.headers[POD_HEADER].startswith("backend-5d8f7c9b4-")


async def test_requests_are_spread_round_robin_over_ready_pods(
        store: Store, proxied: aiohttp.ClientSession, backend: list[str]) -> None:
    answered: list[str] = []
    for _ in range(6):
        async with proxied.get("http://backend.staging:8000/api/items") as resp:
            assert resp.status == 200
            assert await resp.json() == [{"id": 1, "name": "item-1"}, {"id": 2, "name": "item-2"},
                                         {"id": 3, "name": "item-3"}]
            answered.append(resp.headers[POD_HEADER])
    assert Counter(answered) == dict.fromkeys(backend, 2)

    set_ready(store, "staging", backend[0], False)
    answered = []
    for _ in range(4):
        async with proxied.get("http://backend.staging:8000/health") as resp:
            answered.append(resp.headers[POD_HEADER])
    assert Counter(answered) == {backend[1]: 2, backend[2]: 2}, "a pod that is not Ready gets no traffic"


async def test_no_ready_pod_is_a_503(store: Store, proxied: aiohttp.ClientSession) -> None:
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa", ready=False)
    make_pod(store, "staging", "backend-5d8f7c9b4-bbbbb", started=None)
    make_pod(store, "staging", "other-1", deployment="other")
    async with proxied.get("http://backend.staging:8000/health") as resp:
        assert resp.status == 503
        assert "service staging/backend: no ready endpoints" in await resp.text()


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize(("url", "status", "message"), [
    ("http://nope.staging:8000/health", 502, "no such service: nope.staging"),
    ("http://backend.production:8000/health", 502, "no such service: backend.production"),
    ("http://backend.staging:9000/health", 502, "service staging/backend has no port 9000 (ports: 8000)"),
    ("http://backend.staging/health", 502, "service staging/backend has no port 80 (ports: 8000)"),
    ("http://localhost:8000/health", 502, "rollguard sim proxy serves only in-cluster Service hosts"),
])
async def test_what_the_proxy_cannot_route(proxied: aiohttp.ClientSession, url: str, status: int,
                                           message: str) -> None:
    async with proxied.get(url) as resp:
        assert resp.status == status
        assert message in await resp.text()


async def test_the_pod_behaviour_decides_the_answers(store: Store, proxied: aiohttp.ClientSession) -> None:
    make_service(store, "staging", "sick")
    make_pod(store, "staging", "sick-1", deployment="sick",
             env={**FAST, "SIM_HEALTHY": "false", "SIM_API_OK": "false"})
    make_service(store, "staging", "flaky")
    make_pod(store, "staging", "flaky-1", deployment="flaky", env={**FAST, "SIM_ERROR_RATIO": "0.5"})
    async with proxied.get("http://sick.staging:8000/health") as resp:
        assert (resp.status, await resp.json()) == (503, {"status": "unhealthy"})
    async with proxied.get("http://sick.staging:8000/api/items") as resp:
        assert resp.status == 500
    statuses = []
    for _ in range(6):
        async with proxied.get("http://flaky.staging:8000/api/items") as resp:
            statuses.append(resp.status)
    assert statuses == [200, 500] * 3, "exactly every other request fails at error ratio 0.5"
    async with proxied.get("http://flaky.staging:8000/nothing-here") as resp:
        assert resp.status == 404


async def test_api_latency_is_real_time(store: Store, proxied: aiohttp.ClientSession) -> None:
    make_service(store, "staging", "slow")
    make_pod(store, "staging", "slow-1", deployment="slow", env={"SIM_LATENCY_MS": "300"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with proxied.get("http://slow.staging:8000/api/items") as resp:
        assert resp.status == 200
    assert loop.time() - started >= 0.3


@pytest.mark.usefixtures("backend")
async def test_websocket_ping_pong_through_the_proxy(server: WorkloadServer) -> None:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect("ws://backend.staging:8000/ws", proxy=server.url) as ws:
        await ws.send_str(json.dumps({"type": "PING"}))
        reply = await ws.receive(timeout=5)
        assert reply.type == aiohttp.WSMsgType.TEXT
        assert json.loads(reply.data) == {"type": "PONG"}
        await ws.send_str("PING")
        assert (await ws.receive(timeout=5)).data == "PONG"


@pytest.mark.usefixtures("backend")
async def test_proxy_environment_variables_work_too(server: WorkloadServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "WS_PROXY"):
        monkeypatch.setenv(name, server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.get("http://backend.staging:8000/health") as resp:
            assert resp.status == 200
        async with session.get(f"{server.url}/pods/staging/backend-5d8f7c9b4-aaaaa/health") as resp:
            assert resp.status == 200, "NO_PROXY keeps local URLs direct"
        async with session.ws_connect("ws://backend.staging:8000/ws") as ws:
            await ws.send_str('{"type":"PING"}')
            assert json.loads((await ws.receive(timeout=5)).data) == {"type": "PONG"}


async def test_a_broken_websocket_never_answers(store: Store, proxied: aiohttp.ClientSession) -> None:
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-1", env={**FAST, "SIM_WS_OK": "false"})
    async with proxied.ws_connect("ws://backend.staging:8000/ws") as ws:
        await ws.send_str(json.dumps({"type": "PING"}))
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


async def test_server_shutdown_closes_open_websockets(store: Store) -> None:
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-1", env=FAST)
    async with WorkloadServer(store, store.clock) as server, aiohttp.ClientSession() as session, \
            session.ws_connect("ws://backend.staging:8000/ws", proxy=server.url) as ws:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert loop.time() - started < 3, "an open WebSocket must not hold the shutdown"


# ----- plain routes -----

@pytest.mark.usefixtures("backend")
async def test_host_header_routing_without_a_proxy(server: WorkloadServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/health", headers={"Host": "backend.staging.svc:8000"}) as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        # An ordinary dotted host name whose second label is no namespace is left to the server's routes.
        async with session.get(f"{server.url}/health", headers={"Host": "build.example"}) as resp:
            assert resp.status == 404


@pytest.mark.usefixtures("backend")
async def test_service_and_pod_routes_for_humans(server: WorkloadServer) -> None:
    async with aiohttp.ClientSession() as session:
        for port in ("8000", "http"):
            async with session.get(f"{server.url}/svc/staging/backend/{port}/health") as resp:
                assert (resp.status, await resp.json()) == (200, {"status": "ok"}), port
        async with session.get(f"{server.url}/pods/staging/backend-5d8f7c9b4-bbbbb/health") as resp:
            assert resp.headers[POD_HEADER] == "backend-5d8f7c9b4-bbbbb"
        async with session.ws_connect(f"{server.url}/svc/staging/backend/8000/ws") as ws:
            await ws.send_str('{"type": "PING"}')
            assert json.loads((await ws.receive(timeout=5)).data) == {"type": "PONG"}
        async with session.get(f"{server.url}/svc/staging/backend/9000/health") as resp:
            assert resp.status == 502


async def test_named_target_ports_resolve_to_the_container_port(store: Store,
                                                                 proxied: aiohttp.ClientSession) -> None:
    make_service(store, "staging", "backend", port=80, target_port="http")
    make_pod(store, "staging", "backend-1", env=FAST)
    async with proxied.get("http://backend.staging/health") as resp:
        assert resp.status == 200
    make_service(store, "staging", "grpc", port=9090, target_port="grpc", selector={"app": "backend"})
    async with proxied.get("http://grpc.staging:9090/health") as resp:
        assert resp.status == 503, "a pod without the named port is no endpoint of that Service port"


async def test_pod_metrics_route(store: Store, server: WorkloadServer) -> None:
    make_pod(store, "staging", "backend-1", env={"SIM_RPS": "10"})
    await store.clock.advance(30)  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/pods/staging/backend-1/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await resp.text()
        async with session.get(f"{server.url}/pods/staging/nope/metrics") as resp:
            assert resp.status == 404
    families = {f.name: f for f in text_string_to_metric_families(text)}
    total = sum(s.value for s in families["http_requests"].samples if s.name == "http_requests_total")
    assert total == 300.0


async def test_a_deleted_pod_gets_no_more_traffic(store: Store, proxied: aiohttp.ClientSession,
                                                  backend: list[str]) -> None:
    store.delete(PODS, "staging", backend[1])
    answered = set()
    for _ in range(4):
        async with proxied.get("http://backend.staging:8000/health") as resp:
            answered.add(resp.headers[POD_HEADER])
    assert answered == {backend[0], backend[2]}
