"""Secrets never shown: URL secrets in Measurement messages, log lines (tracebacks included) and Events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from daemon.kube.client import KubeClient
from daemon.kube.events import EventRecorder
from daemon.logs import configure_logging
from daemon.notify.secrets import Redactor
from daemon.redaction import SCRUBBER, Scrubber
from daemon.rules.model import HttpSignal
from daemon.settings import LogSettings
from daemon.signals.base import Phase, SignalContext
from daemon.signals.http import HttpProvider
from daemon.signals.session import new_session, redact_url

CTX = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="new222",
                    pod_prefix="backend-new222-", labels={}, rollout_started_at=0.0)
SLACK_TOKEN = "xoxb-1111-2222-abcdefabcdef"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://svc:8000/health?token=s3cr3t-value", "http://svc:8000/health?token=[REDACTED]"),
    ("http://svc/x?a=1&Access_Token=abc&b=2", "http://svc/x?a=1&Access_Token=[REDACTED]&b=2"),
    ("https://blob/x?sv=2020&SIG=abcd%2Fef&se=1", "https://blob/x?sv=2020&SIG=[REDACTED]&se=1"),
    ("http://svc/x?api_key=k1&password=p1&secret=s1&key=k2&auth=a1",
     "http://svc/x?api_key=[REDACTED]&password=[REDACTED]&secret=[REDACTED]&key=[REDACTED]&auth=[REDACTED]"),
    ("http://svc/x?signature=zz#frag", "http://svc/x?signature=[REDACTED]#frag"),
    ("wss://ops:hunter2@chat/ws?x-amz-signature=q&page=2", "wss://chat/ws?x-amz-signature=[REDACTED]&page=2"),
    ("http://svc/x?page=2&sort=name", "http://svc/x?page=2&sort=name"),
])
def test_urls_are_shown_without_query_secrets_or_user_info(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_a_failing_check_never_shows_the_token_in_its_url() -> None:
    async def deny(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/health", deny)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with new_session() as session:
            spec = HttpSignal(f"http://127.0.0.1:{port}/health?token=s3cr3t-value&region=eu")
            measured = await HttpProvider(spec, session=session).measure(CTX)
    finally:
        await runner.cleanup()
    assert measured.phase is Phase.FAILED
    assert measured.message == (f"GET http://127.0.0.1:{port}/health?token=[REDACTED]&region=eu: HTTP 503, "
                                "expected 200: down")


@pytest.fixture
def restore_logging() -> AsyncIterator[None]:
    yield
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers:
        handler.filters.clear()


@pytest.mark.usefixtures("restore_logging")
def test_logging_as_the_cli_configures_it_scrubs_messages_and_tracebacks() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)  # as `rollguard run` does: no redact=
    try:
        raise RuntimeError(f"POST http://ops:hunter2@hooks.internal/x?token=s3cr3t-value failed ({SLACK_TOKEN})")
    except RuntimeError:
        structlog.get_logger("test").exception("check crashed", url="http://svc/x?api_key=k-12345")
        logging.getLogger("aiohttp.client").exception("library %s", "http://svc/y?sig=abcdef")
    text = out.getvalue()
    for secret in ("hunter2", "s3cr3t-value", SLACK_TOKEN, "k-12345", "abcdef"):
        assert secret not in text, text
    record = json.loads(text.splitlines()[0])
    assert record["url"] == "http://svc/x?api_key=[REDACTED]"
    assert "RuntimeError: POST http://hooks.internal/x?token=[REDACTED] failed ([REDACTED])" in record["exception"]
    assert "library http://svc/y?sig=[REDACTED]" in text
    assert "Traceback (most recent call last)" in text


async def test_events_are_written_scrubbed() -> None:
    written: list[dict[str, object]] = []

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        written.append(body)
        return web.json_response(body, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/namespaces/staging/events", create)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    kube = KubeClient(k8s_client.ApiClient(configuration=k8s_client.Configuration(
        host=f"http://127.0.0.1:{runner.addresses[0][1]}")), timeout=5)
    scrubber = Scrubber()
    scrubber.add(lambda text: text.replace("routing-key-0123456789", "[REDACTED]"))
    try:
        for recorder in (EventRecorder(kube, instance="test", scrub=scrubber.scrub), EventRecorder(kube, instance="t")):
            await recorder.record({"metadata": {"namespace": "staging", "name": "backend", "uid": "u1"}},
                                  type_="Warning", reason="AnalysisFailed",
                                  message="smoke: GET http://u:pw@backend/health?token=s3cr3t-value: HTTP 503 "
                                          "(key routing-key-0123456789)")
    finally:
        await kube.close()
        await runner.cleanup()
    assert [event["message"] for event in written] == [
        "smoke: GET http://backend/health?token=[REDACTED]: HTTP 503 (key [REDACTED])",
        "smoke: GET http://backend/health?token=[REDACTED]: HTTP 503 (key routing-key-0123456789)",
    ]
    assert SCRUBBER.scrub("x?token=a") == "x?token=[REDACTED]"


@pytest.fixture
def restore_scrubber() -> Iterator[None]:
    saved = SCRUBBER._redactors
    yield
    SCRUBBER._redactors = saved
    SCRUBBER.changed()


@pytest.mark.usefixtures("restore_logging", "restore_scrubber")
def test_a_secret_learnt_later_is_scrubbed_from_a_text_logged_before() -> None:
    """Scrubbed texts are memoised (an evaluation line per tick repeats its strings); a secret registered
    afterwards, or learnt afterwards by a redactor already registered, must still be scrubbed."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    log = structlog.get_logger("test")
    first, second = "routing-key-0f1e2d3c", "team-key-9a8b7c6d"
    message = f"sent with {first} and {second}"
    log.info("delivery", detail=message)
    redactor = Redactor()
    SCRUBBER.add(redactor.redact)
    redactor.add(first)
    log.info("delivery", detail=message)
    redactor.add(second)  # learnt by a redactor registered already (a team's key on reload)
    log.info("delivery", detail=message)
    shown = [json.loads(line)["detail"] for line in out.getvalue().splitlines()]
    assert shown == [message, f"sent with [REDACTED] and {second}", "sent with [REDACTED] and [REDACTED]"]


class _CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.mark.usefixtures("restore_logging")
def test_each_log_line_is_written_whole_in_one_write() -> None:
    """One write per line: an unbuffered stream (the image sets PYTHONUNBUFFERED) makes each write a system
    call, and a line written in two parts can be interleaved with another thread's."""
    out = _CountingStream()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    for n in range(3):
        structlog.get_logger("test").info("evaluation", n=n)
    assert out.writes == 3
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == [0, 1, 2]
