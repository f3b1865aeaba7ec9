"""PagerDuty: one incident per rollout whatever the retries; resolve closes it; the payload a responder sees."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest

from daemon.clock import FakeClock
from daemon.notify import AlertKind, NotificationPipeline, NotifyConfigError, Redactor
from daemon.notify.pagerduty import PagerDutyNotifier
from sim.receivers.pagerduty import PagerDutyReceiver
from tests.test_notify_kit import ROUTING_KEY, eventually, make_alert

DEDUP_KEY = "rollguard/staging/backend/7"


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyReceiver]:
    async with PagerDutyReceiver(routing_keys=[ROUTING_KEY]) as rx:
        yield rx


@pytest.fixture
async def notifier(pagerduty: PagerDutyReceiver) -> AsyncIterator[PagerDutyNotifier]:
    n = PagerDutyNotifier(routing_key=ROUTING_KEY, redactor=Redactor(), base_url=pagerduty.url, timeout=2,
                          ssl_context=pagerduty.client_ssl_context())
    yield n
    await n.aclose()


async def test_trigger_retried_after_a_500_opens_exactly_one_incident(
    pagerduty: PagerDutyReceiver, notifier: PagerDutyNotifier
) -> None:
    clock = FakeClock()
    pipeline = NotificationPipeline([notifier], clock=clock, backoff_base=1, backoff_cap=2)
    pagerduty.fail_next(status=500)
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLBACK_STARTED))
        await eventually(lambda: bool(clock._sleepers), what="the pipeline to back off after the 500")
        await clock.advance(2)
        await eventually(lambda: len(pagerduty.events) == 1, what="the retried trigger")
        # The same rollout pages again (rollback failed): same dedup key, same incident.
        pipeline.submit(make_alert(AlertKind.ROLLBACK_FAILED))
        await eventually(lambda: len(pagerduty.events) == 2, what="the second trigger")
    finally:
        await pipeline.stop(drain_timeout=1)
    assert [r.status for r in pagerduty.received] == [500, 202, 202]
    incidents = pagerduty.open_incidents()
    assert [(i.dedup_key, i.severity, i.status) for i in incidents] == [(DEDUP_KEY, "critical", "triggered")]
    assert len(incidents[0].events) == 2


async def test_recovered_resolves_the_incident(pagerduty: PagerDutyReceiver, notifier: PagerDutyNotifier) -> None:
    assert (await notifier.send(make_alert(AlertKind.ROLLOUT_FAILED))).ok
    assert len(pagerduty.open_incidents()) == 1
    assert (await notifier.send(make_alert(AlertKind.RECOVERED))).ok
    assert pagerduty.open_incidents() == []
    incident = pagerduty.incident(DEDUP_KEY)
    assert incident is not None
    assert incident.status == "resolved"
    assert pagerduty.events[-1] == {"event_action": "resolve", "dedup_key": DEDUP_KEY}


async def test_the_event_carries_what_a_responder_needs(
    pagerduty: PagerDutyReceiver, notifier: PagerDutyNotifier
) -> None:
    alert = make_alert(AlertKind.REVIEW_NEEDED, action="review", summary="p95 latency 1.9x baseline. " * 100,
                       approve_command="kubectl annotate deployment/backend -n staging rollguard.io/approve=rollback",
                       values={"p95_latency": 0.95, "odd": float("nan")}, baselines={"p95_latency": 0.5})
    assert (await notifier.send(alert)).ok
    event = pagerduty.events[0]
    payload = event["payload"]
    assert (event["event_action"], event["dedup_key"]) == ("trigger", DEDUP_KEY)
    assert (payload["severity"], payload["source"], payload["component"], payload["group"], payload["class"]) == (
        "warning", "staging/backend", "backend", "staging", "review_needed")
    assert len(payload["summary"]) == 1024
    assert payload["summary"].startswith("[staging/backend rev 7] error rate 9.1% > 5% for 1m: p95 latency")
    assert datetime.datetime.fromisoformat(payload["timestamp"]).timestamp() == alert.at
    details = payload["custom_details"]
    assert details["rule"] == "error-rate-over-5pct"
    assert details["values"] == {"p95_latency": 0.95, "odd": "nan"}, "NaN is not JSON; it must be sent as text"
    assert details["baseline"] == {"p95_latency": 0.5}
    assert details["evidence"] == list(alert.evidence)
    assert details["approve_command"] == alert.approve_command


async def test_kinds_pagerduty_does_not_take_are_refused_not_sent(
    pagerduty: PagerDutyReceiver, notifier: PagerDutyNotifier
) -> None:
    result = await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED))
    assert (result.ok, result.retry) == (False, False)
    assert pagerduty.received == []


def test_a_plain_http_base_url_is_a_config_error() -> None:
    with pytest.raises(NotifyConfigError, match="https"):
        PagerDutyNotifier(routing_key=ROUTING_KEY, redactor=Redactor(), base_url="http://127.0.0.1:1")


async def test_the_receiver_certificate_is_verified(pagerduty: PagerDutyReceiver) -> None:
    # Without the receiver's CA the client must refuse the connection: verification is really on.
    untrusting = PagerDutyNotifier(routing_key=ROUTING_KEY, redactor=Redactor(), base_url=pagerduty.url, timeout=2)
    try:
        result = await untrusting.send(make_alert(AlertKind.ROLLOUT_FAILED))
    finally:
        await untrusting.aclose()
    assert not result.ok
    assert result.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error or "certificate" in result.error.lower(), result.error
    assert pagerduty.received == []
