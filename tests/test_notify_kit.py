"""The notifier test kit: every network notifier must pass every test here (Alertmanager's habit).

Each notifier is built by the factory from configuration + environment, exactly as the daemon
builds it, and talks real HTTP to a local receiver that validates the vendor's format. The kit
checks delivery, the classification of every kind of failure (2xx / 429 / 5xx / 4xx / timeout /
refused / bad credentials), and that no secret ever shows up in a result, a log line or an
exception — including when the far end echoes the request, credentials and all, into its error.

Helpers at the top are shared with the other notify test modules.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.notify import (
    Alert,
    AlertKind,
    Channel,
    NotificationPipeline,
    Notifier,
    NotifyConfigError,
    build_notifiers,
    is_routed,
    rollout_key_for,
)
from daemon.notify.console import ConsoleNotifier
from daemon.notify.nop import NopNotifier
from sim.receivers import LocalReceiver
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver
from tests import waiting

# Recognisable secrets: if any of these shows up where it should not, the scan below finds it.
SLACK_TOKEN = "xoxb-1111-2222-SECRETslackTOKENdoNotLeak"
OTHER_SLACK_TOKEN = "xoxb-9999-8888-OTHERslackTOKENdoNotLeak"
ROUTING_KEY = "SECRETroutingKEYdoNOTleak0123456"
OTHER_ROUTING_KEY = "OTHERroutingKEYdoNOTleak01234567"
assert len(ROUTING_KEY) == len(OTHER_ROUTING_KEY) == 32


def make_alert(kind: AlertKind = AlertKind.ROLLBACK_STARTED, **overrides: Any) -> Alert:
    """A realistic alert about staging/backend revision 7."""
    fields: dict[str, Any] = {
        "kind": kind,
        "namespace": "staging",
        "deployment": "backend",
        "revision": 7,
        "pod_template_hash": "5d8f7c9b6d",
        "rollout_key": rollout_key_for("staging", "backend", 7),
        "title": "error rate 9.1% > 5% for 1m",
        "summary": "Rule error-rate-over-5pct matched; rolling back to revision 6.",
        "rule": "error-rate-over-5pct",
        "action": "rollback",
        "values": {"error_rate": 0.091, "health": True, "p95_latency": None},
        "baselines": {"error_rate": 0.004},
        "evidence": ("backend-5d8f7c9b6d-x2x7q: ERROR <db> timeout & retry", "GET /health → 200"),
        "approve_command": None,
        "dry_run": False,
        "at": 1_700_000_000.0,
    }
    fields.update(overrides)
    return Alert(**fields)


async def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (real time) until `predicate()` holds; for work happening in other tasks or threads."""
    await waiting.eventually(predicate, timeout=timeout, what=what, interval=0.005)


def closed_port() -> int:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Harness:
    """One notifier under test, its receiver, and how to make it fail."""

    kind: str
    notifier: Notifier
    receiver: LocalReceiver
    secrets: tuple[str, ...]
    """Everything that must never leak."""
    alert_kind: AlertKind
    """A kind the matrix routes to this notifier's channel."""
    build: Callable[..., Notifier]
    """Build another notifier of this kind: build(base=…, credential=…)."""
    wrong_credential: str
    """A credential the receiver refuses."""

    def refused_base(self) -> str:
        """A base URL where nothing listens."""
        scheme = "https" if self.kind == "pagerduty" else "http"
        return f"{scheme}://127.0.0.1:{closed_port()}" + ("/api/" if self.kind == "slack" else "")

    def accepted(self) -> list[Any]:
        return [r for r in self.receiver.received if r.accepted]


async def _slack(timeout: float) -> AsyncIterator[Harness]:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as rx:
        def build(base: str | None = None, credential: str = SLACK_TOKEN) -> Notifier:
            config = {"slack": {"channel": "#deploys", "baseUrl": base or rx.url, "timeout": timeout}}
            return build_notifiers(config, env={"ROLLGUARD_SLACK_TOKEN": credential}).notifiers[0]
        notifier = build()
        yield Harness("slack", notifier, rx, (SLACK_TOKEN, OTHER_SLACK_TOKEN), AlertKind.ROLLOUT_STARTED, build,
                      wrong_credential=OTHER_SLACK_TOKEN)
        await notifier.aclose()


async def _slack_webhook(timeout: float) -> AsyncIterator[Harness]:
    async with SlackReceiver() as rx:
        secret_part = rx.webhook_path.rsplit("/", 1)[-1]
        wrong_url = rx.webhook_url.replace(secret_part, "0" * len(secret_part))

        def build(base: str | None = None, credential: str | None = None) -> Notifier:
            url = credential or rx.webhook_url
            if base is not None:
                url = url.replace(rx.origin, base)
            config = {"slack": {"webhookUrlFrom": {"env": "HOOK"}, "timeout": timeout}}
            return build_notifiers(config, env={"HOOK": url}).notifiers[0]
        notifier = build()
        yield Harness("slack-webhook", notifier, rx, (secret_part, rx.webhook_path), AlertKind.ROLLOUT_STARTED,
                      build, wrong_credential=wrong_url)
        await notifier.aclose()


async def _pagerduty(timeout: float) -> AsyncIterator[Harness]:
    async with PagerDutyReceiver(routing_keys=[ROUTING_KEY]) as rx:
        def build(base: str | None = None, credential: str = ROUTING_KEY) -> Notifier:
            config = {"pagerduty": {"baseUrl": base or rx.url, "caFile": rx.ca_file, "timeout": timeout}}
            return build_notifiers(config, env={"ROLLGUARD_PAGERDUTY_ROUTING_KEY": credential}).notifiers[0]
        notifier = build()
        yield Harness("pagerduty", notifier, rx, (ROUTING_KEY, OTHER_ROUTING_KEY), AlertKind.ROLLBACK_STARTED, build,
                      wrong_credential=OTHER_ROUTING_KEY)
        await notifier.aclose()


_HARNESSES = {"slack": _slack, "slack-webhook": _slack_webhook, "pagerduty": _pagerduty}


@pytest.fixture(params=sorted(_HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in _HARNESSES[request.param](1.0):
        yield h


# --- delivery ------------------------------------------------------------------------------------


async def test_delivers_and_the_receiver_accepts_the_payload(harness: Harness) -> None:
    result = await harness.notifier.send(make_alert(harness.alert_kind))
    assert result.ok, result.error
    rejected = [r for r in harness.receiver.received if not r.accepted]
    assert rejected == [], f"receiver rejected: {[r.errors for r in rejected]}"
    assert len(harness.accepted()) == 1


async def test_every_routed_kind_is_accepted(harness: Harness) -> None:
    channel = harness.notifier.channel
    kinds = [k for k in AlertKind if is_routed(k, channel)]
    for kind in kinds:
        result = await harness.notifier.send(make_alert(kind, approve_command="rollguard approve staging/backend"))
        assert result.ok, f"{kind}: {result.error}"
    assert [r.errors for r in harness.receiver.received if not r.accepted] == []


# --- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry", "retry_after"),
    [(429, True, 7.0), (500, True, None), (502, True, None), (503, True, 2.0), (400, False, None),
     (404, False, None), (403, False, None)],
)
async def test_classifies_http_statuses(harness: Harness, status: int, retry: bool, retry_after: float | None) -> None:
    harness.receiver.fail_next(status=status, retry_after=retry_after)
    result = await harness.notifier.send(make_alert(harness.alert_kind))
    assert (result.ok, result.retry, result.retry_after) == (False, retry, retry_after), result
    assert result.error is not None
    assert str(status) in result.error, result.error
    # The injected failure used up, the same notifier delivers again.
    assert (await harness.notifier.send(make_alert(harness.alert_kind))).ok


async def test_timeout_is_retryable(harness: Harness) -> None:
    harness.receiver.stall_next()
    started = time.monotonic()
    result = await harness.notifier.send(make_alert(harness.alert_kind))
    assert (result.ok, result.retry) == (False, True), result
    assert time.monotonic() - started < 5, "the notifier's own timeout (1 s) did not fire"


async def test_connection_refused_is_retryable(harness: Harness) -> None:
    notifier = harness.build(base=harness.refused_base())
    try:
        result = await notifier.send(make_alert(harness.alert_kind))
    finally:
        await notifier.aclose()
    assert (result.ok, result.retry) == (False, True), result


async def test_wrong_credentials_give_up(harness: Harness) -> None:
    notifier = harness.build(credential=harness.wrong_credential)
    try:
        result = await notifier.send(make_alert(harness.alert_kind))
    finally:
        await notifier.aclose()
    assert (result.ok, result.retry) == (False, False), result


# --- secrets -------------------------------------------------------------------------------------


Failure = Callable[[Harness], Awaitable[Notifier]]


def _inject(status: int) -> Failure:
    async def failure(h: Harness) -> Notifier:
        h.receiver.fail_next(status=status, retry_after=1, echo=True)
        return h.notifier
    return failure


async def _stall(h: Harness) -> Notifier:
    h.receiver.stall_next()
    return h.notifier


async def _refused(h: Harness) -> Notifier:
    return h.build(base=h.refused_base())


async def _wrong_credentials(h: Harness) -> Notifier:
    return h.build(credential=h.wrong_credential)


FAILURES: dict[str, Failure] = {
    "429-echo": _inject(429), "500-echo": _inject(500), "400-echo": _inject(400), "timeout": _stall,
    "refused": _refused, "wrong-credentials": _wrong_credentials,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_secret_never_leaks(
    harness: Harness, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = await FAILURES[failure](harness)
    clock = FakeClock()
    # The pipeline logs every failure with its error; one attempt so the test needs no clock.
    pipeline = NotificationPipeline([notifier], clock=clock, max_attempts=1, send_timeout=10)
    texts: list[str] = []
    with capture_logs() as logs:
        result = await notifier.send(make_alert(harness.alert_kind, rule="second-" + failure))
        await pipeline.start()
        pipeline.submit(make_alert(harness.alert_kind))
        await eventually(lambda: any("notification" in e["event"] for e in logs), what="the pipeline's log line")
        await pipeline.stop(drain_timeout=0)
    assert not result.ok
    texts.append(str(result))
    texts.extend(repr(entry) for entry in logs)
    texts.append(caplog.text)
    texts.extend(repr(record.__dict__) for record in caplog.records)
    echoed = [r for r in harness.receiver.received if r.errors and "injected" in r.errors[0]]
    if failure.endswith("-echo"):
        # The receiver did put the credentials in its answer; the notifier must have scrubbed them.
        assert echoed, "the fault was not injected"
        assert any(s in str(echoed[0].response) for s in harness.secrets), "the receiver did not echo the secret"
    for secret in harness.secrets:
        for text in texts:
            assert secret not in text, f"{harness.kind}/{failure}: secret leaked into: {text[:500]}"
    if notifier is not harness.notifier:
        await notifier.aclose()


async def test_config_errors_never_quote_the_secret() -> None:
    # A routing key of the wrong length, a token of the wrong shape: the error names the problem only.
    with pytest.raises(NotifyConfigError) as pd_error:
        build_notifiers({"pagerduty": {}}, env={"ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY + "x"})
    with pytest.raises(NotifyConfigError) as slack_error:
        build_notifiers({"slack": {"channel": "#d"}}, env={"ROLLGUARD_SLACK_TOKEN": "SECRETnotAtoken1234"})
    assert ROUTING_KEY not in str(pd_error.value)
    assert "this one has 33" in str(pd_error.value)
    assert "SECRETnotAtoken1234" not in str(slack_error.value)


# --- the local notifiers follow the same Protocol -------------------------------------------------


async def test_console_and_nop_follow_the_protocol() -> None:
    stream = io.StringIO()
    nop = NopNotifier()
    for notifier in (ConsoleNotifier(stream=stream), nop, ConsoleNotifier()):
        assert isinstance(notifier, Notifier)
        assert notifier.channel is Channel.LOG, "local notifiers take every alert"
        with capture_logs() as logs:
            result = await notifier.send(make_alert(AlertKind.REVIEW_NEEDED, approve_command="rollguard approve x"))
        assert result.ok
        await notifier.aclose()
    # The stream-less console logs through structlog instead.
    assert [(e["event"], e["kind"]) for e in logs] == [("alert", "review_needed")]
    assert nop.count == 1
    line = stream.getvalue()
    assert line.startswith("2023-11-14T22:13:20Z REVIEW_NEEDED staging/backend rev 7: Review needed"), line
    assert "approve: rollguard approve x" in line


async def test_console_scrubs_secrets_from_alert_text() -> None:
    stream = io.StringIO()
    notifier = ConsoleNotifier(stream=stream)
    await notifier.send(make_alert(summary=f"someone pasted {SLACK_TOKEN} into a rule"))
    assert SLACK_TOKEN not in stream.getvalue()
    assert "someone pasted [REDACTED] into a rule" in stream.getvalue()
