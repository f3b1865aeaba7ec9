"""Slack's answers the local receiver does not give: a proxy's HTML error page, a rate limiter that is not
Slack, an answer that never ends, a redirect. Each is served by a small aiohttp server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from daemon.notify import AlertKind, Redactor, SendResult
from daemon.notify.slack import SlackNotifier, SlackWebhookNotifier
from daemon.notify.slack_api import MAX_ANSWER_BYTES
from sim.receivers.slack import SlackReceiver
from tests.test_notify_kit import SLACK_TOKEN, make_alert

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler, seen: list[web.Request] | None = None) -> AsyncIterator[str]:
    """An HTTP server answering every POST with `handler`, recording requests in `seen`; yields its origin."""

    async def record(request: web.Request) -> web.StreamResponse:
        await request.read()
        if seen is not None:
            seen.append(request)
        return await handler(request)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _send_once(base_url: str, *, timeout: float = 5.0) -> SendResult:
    notifier = SlackNotifier(token=SLACK_TOKEN, channel="#deploys", redactor=Redactor(), base_url=base_url + "/api/",
                             timeout=timeout)
    try:
        return await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED))
    finally:
        await notifier.aclose()


async def _endless_json(request: web.Request) -> web.StreamResponse:
    # A broken proxy (or server) that keeps sending the same answer: the client must stop reading.
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"ok": true, "channel": "C0ROLLGRD1", "ts": "1700000000.000001", "pad": "')
    chunk = b"x" * 65536
    while True:
        await response.write(chunk)


async def test_a_proxys_html_502_is_retried_and_quoted_without_the_token() -> None:
    async def bad_gateway(request: web.Request) -> web.Response:
        page = (f"<html><body><h1>502 Bad Gateway</h1>\n  <p>request had Authorization: "
                f"{request.headers['Authorization']}</p></body></html>")
        return web.Response(status=502, text=page, content_type="text/html")

    async with serving(bad_gateway) as origin:
        result = await _send_once(origin)
    assert result == SendResult.retry_later(
        "slack chat.postMessage failed: HTTP 502, answer is not JSON: <html><body><h1>502 Bad Gateway</h1> "
        "<p>request had Authorization: Bearer [REDACTED]</p></body></html>"
    )


async def test_a_rate_limiter_in_front_of_slack_is_honoured_though_its_answer_is_not_json() -> None:
    async def too_many(request: web.Request) -> web.Response:
        return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "30"})

    async with serving(too_many) as origin:
        result = await _send_once(origin)
    assert result == SendResult.retry_later(
        "slack chat.postMessage failed: HTTP 429, answer is not JSON: Too Many Requests", retry_after=30.0
    )


async def test_a_200_that_is_not_slacks_json_is_retried() -> None:
    # A proxy's login page with status 200: whether the message was posted is unknown, so try again.
    async def login_page(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>Please sign in</html>", content_type="text/html")

    async with serving(login_page) as origin:
        result = await _send_once(origin)
    assert result == SendResult.retry_later(
        "slack chat.postMessage failed: HTTP 200, answer is not JSON: <html>Please sign in</html>"
    )


async def test_an_answer_that_never_ends_is_cut_at_the_size_bound_not_the_timeout() -> None:
    async with serving(_endless_json) as origin:
        started = time.monotonic()
        result = await _send_once(origin, timeout=20.0)
        elapsed = time.monotonic() - started
    assert result == SendResult.retry_later(
        f"slack chat.postMessage failed: HTTP 200, answer larger than {MAX_ANSWER_BYTES} bytes"
    )
    assert elapsed < 10, f"the client read for {elapsed:.1f} s: it waited for the timeout, not the size bound"


async def test_a_webhooks_200_is_delivered_without_reading_an_endless_answer() -> None:
    async with serving(_endless_json) as origin:
        notifier = SlackWebhookNotifier(url=origin + "/services/T0/B0/secretpart123", redactor=Redactor(),
                                        timeout=20.0)
        started = time.monotonic()
        try:
            result = await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED))
        finally:
            await notifier.aclose()
        elapsed = time.monotonic() - started
    assert result == SendResult.success()
    assert elapsed < 10, f"the client read for {elapsed:.1f} s: it waited for the timeout, not the size bound"


async def test_a_redirect_is_not_followed_so_the_message_goes_nowhere_else() -> None:
    elsewhere: list[web.Request] = []

    async def accept(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "channel": "C0ROLLGRD1", "ts": "1700000000.000001"})

    async with serving(accept, elsewhere) as other:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(other + request.path)

        async with serving(redirect) as origin:
            result = await _send_once(origin)
    assert elsewhere == [], "the call was repeated at the redirect's target"
    assert result == SendResult.give_up("slack chat.postMessage failed: HTTP 307, answer is not JSON: 307: "
                                        "Temporary Redirect")


async def test_calls_are_json_with_the_bearer_token() -> None:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as slack:
        assert (await _send_once(slack.origin)).ok
    [request] = slack.received
    assert (request.path, request.headers["Content-Type"], request.headers["Authorization"]) == (
        "/api/chat.postMessage", "application/json; charset=utf-8", f"Bearer {SLACK_TOKEN}")
    assert (request.body["channel"], request.body["unfurl_links"], request.body["unfurl_media"]) == (
        "#deploys", False, False)
    assert json.dumps(request.body["blocks"]).startswith('[{"type": "header"')
