"""The local PagerDuty Events API v2: TLS, validation with PagerDuty's error shape, incidents."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sim.receivers.pagerduty import PagerDutyReceiver
from tests.test_notify_kit import ROUTING_KEY


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyReceiver]:
    async with PagerDutyReceiver() as rx:
        yield rx


def trigger(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "rollguard/staging/backend/7",
        "payload": {"summary": "s", "source": "staging/backend", "severity": "critical",
                    "timestamp": "2024-05-01T12:00:00Z", "component": "backend", "group": "staging", "class": "x",
                    "custom_details": {"a": 1}},
    }
    event.update(overrides)
    return event


async def enqueue(rx: PagerDutyReceiver, event: Any) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(ssl=rx.client_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(rx.url + "/v2/enqueue", json=event) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_accepts_a_trigger_like_pagerduty(pagerduty: PagerDutyReceiver) -> None:
    assert await enqueue(pagerduty, trigger()) == (
        202, {"status": "success", "message": "Event processed", "dedup_key": "rollguard/staging/backend/7"})
    assert [i.dedup_key for i in pagerduty.open_incidents()] == ["rollguard/staging/backend/7"]


async def test_repeats_update_one_incident_and_resolve_closes_it(pagerduty: PagerDutyReceiver) -> None:
    await enqueue(pagerduty, trigger())
    await enqueue(pagerduty, trigger(payload={**trigger()["payload"], "severity": "warning"}))
    assert len(pagerduty.incidents) == 1
    assert pagerduty.incidents[0].severity == "warning"
    status, _ = await enqueue(pagerduty, {"routing_key": ROUTING_KEY, "event_action": "resolve",
                                          "dedup_key": "rollguard/staging/backend/7"})
    assert status == 202
    assert pagerduty.open_incidents() == []
    await enqueue(pagerduty, trigger())
    assert [i.status for i in pagerduty.incidents] == ["resolved", "triggered"], "a trigger after resolve re-opens"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (trigger(routing_key="short"), "Length of 'routing_key' is incorrect (should be 32 characters)"),
        (trigger(routing_key=None), "'routing_key' is missing or blank"),
        (trigger(event_action="explode"), "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"),
        (trigger(dedup_key="k" * 256), "Length of 'dedup_key' is too long (maximum is 255 characters)"),
        ({"routing_key": ROUTING_KEY, "event_action": "resolve"},
         "'dedup_key' is missing or blank (required for event_action 'resolve')"),
        (trigger(payload=None), "'payload' is missing or is not an object"),
        (trigger(payload={"source": "s", "severity": "info"}), "'payload.summary' is missing or blank"),
        (trigger(payload={"summary": "x" * 1025, "source": "s", "severity": "info"}),
         "Length of 'payload.summary' is too long (maximum is 1024 characters)"),
        (trigger(payload={"summary": "s", "severity": "info"}), "'payload.source' is missing or blank"),
        (trigger(payload={"summary": "s", "source": "s", "severity": "fatal"}),
         "'payload.severity' is invalid (must be one of: critical, error, warning, info)"),
        (trigger(payload={"summary": "s", "source": "s", "severity": "info", "timestamp": "yesterday"}),
         "'payload.timestamp' is not a valid ISO 8601 date/time"),
        (trigger(payload={"summary": "s", "source": "s", "severity": "info", "sevrity": "x"}),
         "'payload.sevrity' is not a recognised field"),
    ],
)
async def test_invalid_events_get_pagerdutys_400(
    pagerduty: PagerDutyReceiver, event: dict[str, Any], error: str
) -> None:
    status, answer = await enqueue(pagerduty, event)
    assert status == 400
    assert (answer["status"], answer["message"]) == ("invalid event", "Event object is invalid")
    assert error in answer["errors"], answer["errors"]
    assert pagerduty.incidents == []


async def test_unknown_routing_key_when_keys_are_configured() -> None:
    async with PagerDutyReceiver(routing_keys=["x" * 32]) as rx:
        status, answer = await enqueue(rx, trigger())
    assert (status, answer["errors"]) == (400, ["Invalid routing key"])


async def test_fault_injection(pagerduty: PagerDutyReceiver) -> None:
    pagerduty.fail_next(status=500)
    pagerduty.fail_next(status=429, retry_after=2)
    connector = aiohttp.TCPConnector(ssl=pagerduty.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(pagerduty.url + "/v2/enqueue", json=trigger()) as resp:
            assert (resp.status, await resp.text()) == (500, "Internal Server Error")
        async with session.post(pagerduty.url + "/v2/enqueue", json=trigger()) as resp:
            assert (resp.status, resp.headers["Retry-After"], (await resp.json())["status"]) == (
                429, "2", "throttle event")
    assert pagerduty.incidents == [], "failed requests change nothing"
    assert (await enqueue(pagerduty, trigger()))[0] == 202


async def test_tls_is_real(pagerduty: PagerDutyReceiver) -> None:
    assert pagerduty.url.startswith("https://127.0.0.1:")
    # The system trust store does not know the throw-away CA.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.post(pagerduty.url + "/v2/enqueue", json=trigger())
    # The CA file verifies the certificate, hostname included.
    context = ssl.create_default_context(cafile=pagerduty.ca_file)
    assert context.check_hostname
    assert (await enqueue(pagerduty, trigger()))[0] == 202
