"""Hostile workloads and providers: every case in `tests/data/hostile/` ends as a Measurement, never an exception.

Each case file names the provider, the signal, what a loopback aiohttp server sends (a pod's log
stream through a fake Kubernetes API, an HTTP body, WebSocket messages, a Prometheus API answer) and
the Measurement expected (phase, value, the exact message; `{url}` stands for the served URL).
Bodies are given as pieces: `text`, `hex` (raw bytes, for what is not UTF-8) and `repeat`/`times`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from daemon.kube.client import KubeClient
from daemon.rules.model import HttpSignal, JsonExpectation, LogsSignal, PrometheusSignal, WebSocketSignal
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.http import HttpProvider
from daemon.signals.logs import LogsProvider
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider
from daemon.signals.session import new_session
from daemon.signals.websocket import WebSocketProvider

CASES = Path(__file__).parent / "data" / "hostile"
T0 = 1_764_151_200.0  # 2025-11-26T10:00:00Z, the stamp of the case files' log lines
CTX = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="new222",
                    pod_prefix="backend-new222-", labels={"app": "backend"}, rollout_started_at=T0 - 60)
POD = {
    "metadata": {"name": "backend-new222-aaaaa", "namespace": "staging", "uid": "uid-a",
                 "labels": {"pod-template-hash": "new222"},
                 "ownerReferences": [{"kind": "ReplicaSet", "name": "backend-new222"}]},
    "spec": {"containers": [{"name": "app"}]},
    "status": {"phase": "Running"},
}
_CHUNK = 1 << 20


def pieces_bytes(pieces: list[dict[str, Any]]) -> Iterator[bytes]:
    """The bytes a case's pieces stand for, in chunks of at most 1 MiB (huge bodies are never one object)."""
    for piece in pieces:
        if "text" in piece:
            yield str(piece["text"]).encode()
        elif "hex" in piece:
            yield bytes.fromhex(str(piece["hex"]))
        else:
            unit = str(piece["repeat"]).encode()
            per_chunk = max(1, _CHUNK // len(unit))
            left = int(piece["times"])
            while left > 0:
                n = min(left, per_chunk)
                yield unit * n
                left -= n


async def stream(request: web.Request, pieces: list[dict[str, Any]], content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    try:
        for chunk in pieces_bytes(pieces):
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client stopped reading at its cap: that is the point
    return response


@dataclass
class Served:
    url: str
    runner: web.AppRunner


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def measure_case(case: dict[str, Any], start: Any) -> tuple[Measurement, str]:
    """Serve `case` on loopback, measure it with the daemon's provider; (measurement, the URL shown)."""
    provider = case["provider"]
    signal = case.get("signal") or {}
    app = web.Application()
    if provider == "logs":
        async def pods(_request: web.Request) -> web.Response:
            return web.json_response({"kind": "PodList", "metadata": {}, "items": [POD]})

        async def log(request: web.Request) -> web.StreamResponse:
            return await stream(request, case["serve"], "text/plain")

        app.router.add_get("/api/v1/namespaces/staging/pods", pods)
        app.router.add_get("/api/v1/namespaces/staging/pods/backend-new222-aaaaa/log", log)
        base = await start(app)
        kube = KubeClient(k8s_client.ApiClient(configuration=k8s_client.Configuration(host=base)), timeout=10)
        try:
            return await LogsProvider(LogsSignal(signal["pattern"]), kube=kube).measure(CTX), base
        finally:
            await kube.close()
    if provider == "http":
        async def check(request: web.Request) -> web.StreamResponse:
            return await stream(request, case["serve"], "application/json")

        app.router.add_get("/check", check)
        base = await start(app)
        expect_json = signal.get("expectJson")
        spec = HttpSignal(f"{base}/check", timeout=10.0, expect_body=signal.get("expectBody"),
                          expect_json=JsonExpectation(expect_json["path"], expect_json["equals"])
                          if expect_json else None)
        async with new_session() as session:
            return await HttpProvider(spec, session=session).measure(CTX), f"{base}/check"
    if provider == "websocket":
        async def chat(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(max_msg_size=0)
            await ws.prepare(request)
            try:
                for message in case.get("messages") or []:
                    await ws.send_str(b"".join(pieces_bytes(message)).decode())
                repeated = case.get("repeat_messages")
                for _ in range(int(repeated["times"]) if repeated else 0):
                    await ws.send_str(str(repeated["text"]))
                await ws.receive()  # hold the connection until the client closes it
            except ConnectionError:
                pass
            return ws

        app.router.add_get("/ws", chat)
        base = await start(app)
        url = base.replace("http://", "ws://") + "/ws"
        async with new_session() as session:
            spec = WebSocketSignal(url, expect=signal.get("expect"), timeout=10.0)
            return await WebSocketProvider(spec, session=session).measure(CTX), url
    assert provider == "prometheus", provider

    async def query(request: web.Request) -> web.StreamResponse:
        return await stream(request, case["serve"], "application/json")

    app.router.add_get("/api/v1/query", query)
    base = await start(app)
    async with new_session() as session:
        client = PrometheusClient(base, session, timeout=10.0, tick=0)
        try:
            return await PrometheusProvider(PrometheusSignal("up"), client=client).measure(CTX), base
        finally:
            await client.aclose()


ALL_CASES = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(CASES.glob("*.yaml"))}


@pytest.mark.parametrize("name", ALL_CASES)
async def test_a_hostile_case_ends_as_the_expected_measurement(name: str, serve: Any) -> None:
    case = ALL_CASES[name]
    measured, url = await measure_case(case, serve)
    expect = case["expect"]
    assert measured.phase is Phase(expect["phase"]), measured
    assert measured.message == expect["message"].replace("{url}", url), measured.message
    if "value" in expect:
        assert measured.value == expect["value"], measured
    if "evidence" in expect:
        assert list(measured.evidence) == expect["evidence"], measured.evidence
    assert len(measured.message) <= 300
