"""HTTP check signals through the simulated cluster's service proxy, plus a small local server for the odd cases.

In-cluster URLs (`http://backend.staging:8000/health`) reach simulated pods through the workload
server used as an HTTP proxy, exactly as the daemon does when it runs outside a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.rules.model import HttpSignal, JsonExpectation
from daemon.signals.base import Phase, SignalContext
from daemon.signals.http import HttpProvider, JsonPathError, json_equal, json_path_get
from daemon.signals.session import describe_error, redact_url
from sim.prometheus import free_port
from sim.services import WorkloadServer
from sim.store import Store
from tests.promkit import make_pod, make_service, set_ready

HEALTH = "http://backend.{{namespace}}:8000/health"
FAST = {"SIM_LATENCY_MS": "1"}
CTX = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="5d8f7c9b4",
                    pod_prefix="backend-5d8f7c9b4-", labels={"app": "backend"}, rollout_started_at=0.0)


def backend(store: Store, **env: str) -> None:
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa", env={**FAST, **env})


async def check(spec: HttpSignal, session: aiohttp.ClientSession, server: WorkloadServer) -> Any:
    return await HttpProvider(spec, session=session, proxy=server.url).measure(CTX)


# ----- through the simulated cluster -----

async def test_a_healthy_pod_passes(store: Store, server: WorkloadServer, session: aiohttp.ClientSession) -> None:
    backend(store)
    measured = await check(HttpSignal(HEALTH), session, server)
    assert (measured.phase, measured.value) == (Phase.OK, True), measured
    assert measured.details["status"] == 200.0
    assert 0 < measured.details["latency_seconds"] < 2
    assert measured.message.startswith("GET http://backend.staging:8000/health: HTTP 200 in "), measured.message
    assert measured.evidence == ()


async def test_an_unhealthy_pod_fails_with_its_status_and_body(store: Store, server: WorkloadServer,
                                                               session: aiohttp.ClientSession) -> None:
    backend(store, SIM_HEALTHY="false")
    measured = await check(HttpSignal(HEALTH), session, server)
    assert (measured.phase, measured.value) == (Phase.FAILED, False), measured
    assert measured.details["status"] == 503.0
    assert measured.message == ('GET http://backend.staging:8000/health: HTTP 503, expected 200: '
                                '{"status": "unhealthy"}')
    assert measured.evidence == ('{"status": "unhealthy"}',)


async def test_no_ready_pod_and_no_service_fail(store: Store, server: WorkloadServer,
                                               session: aiohttp.ClientSession) -> None:
    backend(store)
    set_ready(store, "staging", "backend-5d8f7c9b4-aaaaa", False)
    not_ready = await check(HttpSignal(HEALTH), session, server)
    assert not_ready.phase is Phase.FAILED
    assert not_ready.details["status"] == 503.0
    assert "no ready endpoints" in not_ready.message, not_ready.message

    unknown = await check(HttpSignal("http://frontend.{{namespace}}:8000/health"), session, server)
    assert unknown.phase is Phase.FAILED
    assert unknown.details["status"] == 502.0
    assert "no such service: frontend.staging" in unknown.message, unknown.message


async def test_json_and_body_expectations(store: Store, server: WorkloadServer, session: aiohttp.ClientSession) -> None:
    backend(store)
    assert (await check(HttpSignal(HEALTH, expect_json=JsonExpectation("$.status", "ok")), session, server)).value
    wrong = await check(HttpSignal(HEALTH, expect_json=JsonExpectation("$.status", "healthy")), session, server)
    assert wrong.phase is Phase.FAILED
    assert wrong.message == 'GET http://backend.staging:8000/health: $.status is "ok", expected "healthy"'
    assert wrong.evidence == ('{"status": "ok"}',)

    items = "http://backend.{{namespace}}:8000/api/items"
    first = await check(HttpSignal(items, expect_json=JsonExpectation("$[0]", {"id": 1.0, "name": "item-1"})),
                        session, server)
    assert first.phase is Phase.OK, first
    missing = await check(HttpSignal(items, expect_json=JsonExpectation("$[5].id", 6)), session, server)
    assert missing.message.endswith(": $[5]: only 3 items (expected $[5].id = 6)"), missing.message

    assert (await check(HttpSignal(HEALTH, expect_body=r'"status":\s*"ok"'), session, server)).phase is Phase.OK
    no_match = await check(HttpSignal(HEALTH, expect_body="^healthy$"), session, server)
    assert no_match.phase is Phase.FAILED
    assert no_match.message == "GET http://backend.staging:8000/health: the body does not match /^healthy$/"

    not_json = await check(HttpSignal("http://backend.{{namespace}}:8000/nope",
                                      expect_status=404, expect_json=JsonExpectation("$.a", 1)), session, server)
    assert not_json.message.endswith(": the body is not JSON (expected $.a = 1)"), not_json.message


async def test_a_proxy_that_is_down_is_an_error_not_a_failure(session: aiohttp.ClientSession) -> None:
    proxy = f"http://127.0.0.1:{free_port()}"
    measured = await HttpProvider(HttpSignal(HEALTH), session=session, proxy=proxy).measure(CTX)
    assert (measured.phase, measured.value) == (Phase.ERROR, None), measured
    assert measured.message.startswith(f"GET http://backend.staging:8000/health: the proxy {proxy} is unreachable")


async def test_a_url_that_cannot_be_rendered_is_an_error(session: aiohttp.ClientSession) -> None:
    spec = HttpSignal("http://backend.staging:8000/{{labels.team}}")
    measured = await HttpProvider(spec, session=session).measure(CTX)
    assert measured.phase is Phase.ERROR
    assert measured.message == ("cannot render the URL: {{labels.team}} has no value: the pod template has no label "
                                "'team'")


# ----- a local server for timeouts, redirects, refused connections and credentials -----

class Local:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.authorization: str | None = None
        self.url = ""

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()  # answers only when the test says so: no handler outlives the test
        return web.Response(text="late")

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"." * 8192)
            await asyncio.sleep(0)
        await response.write(b"END-OF-REPORT")
        await response.write_eof()
        return response

    async def secret(self, request: web.Request) -> web.Response:
        self.authorization = request.headers.get("Authorization")
        return web.Response(status=500, text="boom\nTraceback: " + "x" * 400)


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    state = Local()
    app = web.Application()
    app.router.add_get("/slow", state.slow)
    app.router.add_get("/redirect", state.redirect)
    app.router.add_get("/secret", state.secret)
    app.router.add_get("/big", state.big)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        state.release.set()
        await asyncio.sleep(0.01)
        await runner.cleanup()


async def test_no_answer_in_time_fails_within_the_timeout(local: Local, session: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    measured = await HttpProvider(HttpSignal(f"{local.url}/slow", timeout=0.2), session=session).measure(CTX)
    assert loop.time() - started < 1.0, "bounded by the check's timeout"
    assert (measured.phase, measured.value) == (Phase.FAILED, False), measured
    assert measured.message == f"GET {local.url}/slow: no answer within 0.2s"
    assert measured.details["latency_seconds"] >= 0.2


async def test_redirects_are_judged_not_followed(local: Local, session: aiohttp.ClientSession) -> None:
    measured = await HttpProvider(HttpSignal(f"{local.url}/redirect"), session=session).measure(CTX)
    assert measured.phase is Phase.FAILED
    assert measured.details["status"] == 302.0
    expected = await HttpProvider(HttpSignal(f"{local.url}/redirect", expect_status=302), session=session).measure(CTX)
    assert expected.phase is Phase.OK


async def test_a_body_arriving_in_many_chunks_is_read_whole(local: Local, session: aiohttp.ClientSession) -> None:
    spec = HttpSignal(f"{local.url}/big", expect_body="END-OF-REPORT$")
    measured = await HttpProvider(spec, session=session).measure(CTX)
    assert measured.phase is Phase.OK, measured


async def test_refused_connections_fail(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    measured = await HttpProvider(HttpSignal(url), session=session).measure(CTX)
    assert (measured.phase, measured.value) == (Phase.FAILED, False)
    assert measured.message == f"GET {url}: connection refused"


async def test_credentials_in_the_url_are_sent_but_never_shown(local: Local, session: aiohttp.ClientSession) -> None:
    url = local.url.replace("http://", "http://probe:s3cret@") + "/secret"
    measured = await HttpProvider(HttpSignal(url), session=session).measure(CTX)
    assert (local.authorization or "").startswith("Basic "), "user-info is sent as basic auth"
    assert measured.phase is Phase.FAILED
    assert "s3cret" not in measured.message
    assert measured.message.startswith(f"GET {local.url}/secret: HTTP 500, expected 200: boom Traceback: xxx")
    assert "\n" not in measured.message
    (evidence,) = measured.evidence
    assert len(evidence) == 200, "the first 200 characters of the body"


# ----- the JSON path subset -----

@pytest.mark.parametrize(("path", "expected"), [
    ("$", {"a": {"b": [10, {"c": True}]}, "odd key": None}),
    ("$.a.b[0]", 10),
    ("$.a.b[1].c", True),
    ("$['odd key']", None),
])
def test_json_paths(path: str, expected: Any) -> None:
    document = {"a": {"b": [10, {"c": True}]}, "odd key": None}
    assert json_path_get(document, path) == expected


@pytest.mark.parametrize(("path", "message"), [
    ("$.x", r"\$\.x: no such key"),
    ("$.a.b[2]", r"\$\.a\.b\[2\]: only 2 items"),
    ("$.a.b.c", r"\$\.a\.b\.c: a list has no keys"),
    ("$.a[0]", r"\$\.a\[0\]: an object is no list"),
    ("a.b", r"a JSON path starts with \$"),
    ("$.a..b", r"cannot read the path after \$\.a"),
])
def test_json_paths_that_lead_nowhere(path: str, message: str) -> None:
    with pytest.raises(JsonPathError, match=message):
        json_path_get({"a": {"b": [1, 2]}}, path)


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1.0, True),
    (True, 1, False),
    (0, False, False),
    (None, None, True),
    ("1", 1, False),
    ({"a": [1, True]}, {"a": [1.0, True]}, True),
    ({"a": [1, True]}, {"a": [1, 1]}, False),
    ([1, 2], [1, 2, 3], False),
])
def test_json_equality_keeps_booleans_apart_from_numbers(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal


# ----- messages never carry credentials -----

@pytest.mark.parametrize(("text", "expected"), [
    ("http://user:pass@backend.staging:8000/health", "http://backend.staging:8000/health"),
    ("wss://token@chat.example/ws?x=1", "wss://chat.example/ws?x=1"),
    ("http://backend.staging:8000/health", "http://backend.staging:8000/health"),
])
def test_urls_are_shown_without_user_info(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_exception_messages_are_one_line_without_user_info() -> None:
    error = OSError("cannot reach http://ops:hunter2@prom:9090/api\nsecond line")
    assert describe_error(error) == "OSError: cannot reach http://prom:9090/api second line"
