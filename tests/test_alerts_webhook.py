"""`POST /api/v1/alerts/alertmanager` as Alertmanager and an attacker see it: its own bearer token, the
version 4 payload, the size bound, and the API token of `/api/v1/*` not standing in its way."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from daemon.alertmanager import AlertHub
from daemon.alertmanager_http import WEBHOOK_PATH, webhook_handler
from daemon.clock import SystemClock
from daemon.http import HttpServer, build_http_app
from daemon.measurement import SignalContext
from daemon.metrics import Metrics
from daemon.rules.matchers import parse_matcher
from daemon.rules.model import AlertsSignal
from daemon.settings import ListenAddress

TOKEN = "webhook-s3cret"


def body(status: str = "firing", version: str = "4") -> bytes:
    return json.dumps({"version": version, "status": status, "receiver": "rollguard", "alerts": [{
        "status": status, "labels": {"alertname": "HighErrorRate", "namespace": "staging",
                                     "pod": "backend-new222-abcde"},
        "annotations": {"summary": "errors"}, "startsAt": "2030-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "abc123"}]}).encode()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, AlertHub]]:
    hub = AlertHub(SystemClock())
    app = build_http_app(metrics=Metrics(), ready=lambda: (True, "ok"), analyses=list, api_token="api-t0ken",
                         alert_webhook=(WEBHOOK_PATH, webhook_handler(hub, token=TOKEN)))
    server = HttpServer(app, ListenAddress("127.0.0.1", 0))
    await server.start()
    try:
        yield server.url + WEBHOOK_PATH, hub
    finally:
        await server.stop()


async def post(url: str, data: bytes, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.post(url, data=io.BytesIO(data), headers=headers) as resp:
        return resp.status, await resp.text()


async def test_a_push_with_the_webhook_token_is_received_and_wakes_the_analysis(
        served: tuple[str, AlertHub]) -> None:
    url, hub = served
    ctx = SignalContext("staging", "backend", 2, "new222", "backend-new222-", {}, time.time())
    woken = hub.subscribe(ctx, [AlertsSignal((parse_matcher('alertname="HighErrorRate"'),))])
    assert await post(url, body(), TOKEN) == (200, '{"received": 1, "woke": 1}')
    assert woken.is_set()
    assert [a.fingerprint for a in hub.pushed()] == ["abc123"]
    assert await post(url, body("resolved"), TOKEN) == (200, '{"received": 1, "woke": 0}')
    assert hub.pushed() == []


@pytest.mark.parametrize(("data", "token", "expected"), [
    (body(), None, (401, "401: a valid bearer token is required\n")),
    (body(), "api-t0ken", (401, "401: a valid bearer token is required\n")),
    (body(), "wrong", (401, "401: a valid bearer token is required\n")),
    (body(version="3"), TOKEN,
     (400, '400: the payload version is not "4" (send from Alertmanager\'s webhook_configs)\n')),
    (b"{" + b" " * (1024 * 1024) + b"}", TOKEN, (413, "413: the body is over 1048576 bytes\n")),
])
async def test_a_push_without_the_token_or_with_a_bad_body_is_refused_and_stores_nothing(
        served: tuple[str, AlertHub], data: bytes, token: str | None, expected: tuple[int, str]) -> None:
    url, hub = served
    assert await post(url, data, token) == expected
    assert hub.pushed() == []
    assert TOKEN not in expected[1]


async def test_without_a_configured_token_every_push_is_refused() -> None:
    hub = AlertHub(SystemClock())
    server = HttpServer(build_http_app(metrics=Metrics(), ready=lambda: (True, "ok"), analyses=list,
                                       alert_webhook=(WEBHOOK_PATH, webhook_handler(hub, token=None))),
                        ListenAddress("127.0.0.1", 0))
    await server.start()
    try:
        status, text = await post(server.url + WEBHOOK_PATH, body(), "anything")
    finally:
        await server.stop()
    assert (status, text) == (
        403, "403: no webhook token is configured (set ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN_FILE)\n")
    assert hub.pushed() == []
