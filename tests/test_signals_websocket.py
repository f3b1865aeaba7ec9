"""WebSocket check signals against simulated pods, through the service proxy and directly, plus a local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from daemon.rules.model import WebSocketSignal
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.websocket import WebSocketProvider
from sim.prometheus import free_port
from sim.services import WorkloadServer
from sim.store import Store
from tests.promkit import make_pod, make_service, set_ready

WS = "ws://backend.{{namespace}}:8000/ws"
PING = '{"type":"PING"}'
CTX = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="5d8f7c9b4",
                    pod_prefix="backend-5d8f7c9b4-", labels={"app": "backend"}, rollout_started_at=0.0)


def backend(store: Store, **env: str) -> None:
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa", env={"SIM_LATENCY_MS": "1", **env})


async def check(spec: WebSocketSignal, session: aiohttp.ClientSession, proxy: str | None) -> Measurement:
    return await WebSocketProvider(spec, session=session, proxy=proxy).measure(CTX)


# ----- simulated pods -----

async def test_ping_pong_through_the_proxy(store: Store, server: WorkloadServer,
                                           session: aiohttp.ClientSession) -> None:
    backend(store)
    measured = await check(WebSocketSignal(WS, send=PING, expect="PONG"), session, server.url)
    assert (measured.phase, measured.value) == (Phase.OK, True), measured
    assert measured.message.startswith("""ws://backend.staging:8000/ws: answered '{"type": "PONG"}' in """)
    assert 0 < measured.details["latency_seconds"] < 2


async def test_ping_pong_directly(store: Store, server: WorkloadServer, session: aiohttp.ClientSession) -> None:
    backend(store)
    direct = server.url.replace("http://", "ws://") + "/svc/{{namespace}}/backend/8000/ws"
    measured = await check(WebSocketSignal(direct, send="PING", expect="^PONG$"), session, None)
    assert measured.phase is Phase.OK, measured


async def test_a_pod_that_never_answers_fails_after_the_timeout(store: Store, server: WorkloadServer,
                                                                session: aiohttp.ClientSession) -> None:
    backend(store, SIM_WS_OK="false")
    loop = asyncio.get_running_loop()
    started = loop.time()
    measured = await check(WebSocketSignal(WS, send=PING, expect="PONG", timeout=0.3), session, server.url)
    elapsed = loop.time() - started
    assert (measured.phase, measured.value) == (Phase.FAILED, False), measured
    assert measured.message == "ws://backend.staging:8000/ws: no message matching /PONG/ within 0.3s"
    assert 0.3 <= elapsed < 1.5, elapsed


async def test_no_ready_pod_and_no_service_fail_the_handshake(store: Store, server: WorkloadServer,
                                                             session: aiohttp.ClientSession) -> None:
    backend(store)
    set_ready(store, "staging", "backend-5d8f7c9b4-aaaaa", False)
    not_ready = await check(WebSocketSignal(WS, send=PING, expect="PONG"), session, server.url)
    assert not_ready.phase is Phase.FAILED
    assert not_ready.message.startswith("ws://backend.staging:8000/ws: WebSocket handshake failed: HTTP 503"), \
        not_ready.message

    unknown = await check(WebSocketSignal("ws://chat.{{namespace}}:8000/ws", expect="PONG"), session, server.url)
    assert unknown.phase is Phase.FAILED
    assert "handshake failed: HTTP 502" in unknown.message, unknown.message


async def test_connecting_is_enough_without_expect(store: Store, server: WorkloadServer,
                                                   session: aiohttp.ClientSession) -> None:
    backend(store, SIM_WS_OK="false")
    measured = await check(WebSocketSignal(WS), session, server.url)
    assert measured.phase is Phase.OK
    assert measured.message.startswith("ws://backend.staging:8000/ws: connected in ")


async def test_refused_is_a_failure_and_a_dead_proxy_an_error(session: aiohttp.ClientSession) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    refused = await check(WebSocketSignal(url, expect="PONG"), session, None)
    assert (refused.phase, refused.value) == (Phase.FAILED, False)
    assert refused.message == f"{url}: connection refused"

    proxy = f"http://127.0.0.1:{free_port()}"
    dead = await check(WebSocketSignal(WS, expect="PONG"), session, proxy)
    assert (dead.phase, dead.value) == (Phase.ERROR, None), dead
    assert dead.message.startswith(f"ws://backend.staging:8000/ws: the proxy {proxy} is unreachable")


# ----- a local server: greetings, early closes -----

async def chatty(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("welcome")
    await ws.send_bytes(b"\x00binary hello")
    async for message in ws:
        if message.data == "bye":
            await ws.close(code=4000, message=b"going away")
        elif message.data == "PING":
            await ws.send_str("PONG")
    return ws


@pytest.fixture
async def local() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", chatty)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"ws://probe:s3cret@127.0.0.1:{runner.addresses[0][1]}/ws"
    finally:
        await runner.cleanup()


async def test_other_messages_are_skipped_then_quoted(local: str, session: aiohttp.ClientSession) -> None:
    passed = await check(WebSocketSignal(local, send="PING", expect="PONG"), session, None)
    assert passed.phase is Phase.OK, "a greeting before the answer is skipped"

    closed = await check(WebSocketSignal(local, send="bye", expect="PONG"), session, None)
    assert closed.phase is Phase.FAILED
    assert closed.message.endswith(": the server closed the WebSocket (code 4000) before an answer matching /PONG/")
    assert closed.evidence == ("welcome", "\x00binary hello")
    assert "s3cret" not in closed.message, "user-info never shown"
    assert closed.message.startswith("ws://127.0.0.1:")
