"""HTTP check signals: one request to the workload, passed (True) or failed (False).

`HttpProvider` renders the URL for the revision (`render_url`: values encoded, no injection), sends
`spec.method` through the daemon's pooled session and checks, in order: the status code
(`expectStatus`), the body against `expectBody` (a Python regex, searched), and one JSON value
(`expectJson`: a `$`-rooted path of `.key`, `['key']` and `[index]` steps, compared with JSON
equality, so `true` is not `1` but `1` is `1.0`).

What counts as what (see `signals.base`): a refused connection, a timeout, a reset, an unknown
host, a TLS failure or a wrong status (5xx included) is the workload failing the check: FAILED,
with the reason in the message and the first 200 characters of the body as evidence. The
measuring side being broken is ERROR: the URL template cannot be rendered, or the in-cluster
proxy (`proxy`, how the daemon reaches `http://svc.ns:port` from outside a cluster) is down.

Redirects are not followed: a check judges the URL it names (write `expectStatus: 301` to check a
redirect). The URL's user-info, if any, is sent as basic auth by aiohttp and never appears in a
message; nor do the values of secret-looking query parameters (`?token=…`, see `redact_url`).

Bounds: at most `MAX_BODY` bytes of a body are read. A check that judges the body (`expectBody`,
`expectJson`) FAILS when the body is larger ("the body is larger than 1048576 bytes"); a status-only
check ignores the rest. JSON nested deeper than `MAX_JSON_DEPTH` levels fails the check with a message
(never a RecursionError). Anything unexpected inside the provider is this signal's ERROR.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp

from daemon.rules.model import HttpSignal, JsonExpectation
from daemon.rules.regexes import compile_regex
from daemon.rules.templates import TemplateError, render_url
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.session import (
    MAX_JSON_DEPTH,
    JsonTooDeep,
    connection_failure_reason,
    describe_error,
    excerpt,
    loads_bounded,
    one_line,
    redact_url,
)

__all__ = ["MAX_BODY", "HttpProvider", "JsonPathError", "json_equal", "json_path_get"]

MAX_BODY = 1 << 20
"""Bytes of a response body read at most (enough for any health or smoke-test answer); a check judging a
larger body fails."""

_STEP = re.compile(r"\.(?P<key>[A-Za-z_][A-Za-z0-9_-]*)|\[(?P<index>\d+)\]|\['(?P<quoted>[^']*)'\]")


class JsonPathError(LookupError):
    """A JSON path does not lead to a value in a document; the message says at which step."""


def json_path_get(document: Any, path: str) -> Any:
    """The value at `path` (`$`, `$.a.b`, `$.items[0].id`, `$['a key']`) in a decoded JSON document."""
    if not path.startswith("$"):
        raise JsonPathError(f"{path}: a JSON path starts with $")
    position, value, walked = 1, document, "$"
    while position < len(path):
        step = _STEP.match(path, position)
        if step is None:
            raise JsonPathError(f"{path}: cannot read the path after {walked}")
        key = step.group("key") if step.group("key") is not None else step.group("quoted")
        if key is not None:
            if not isinstance(value, dict) or key not in value:
                what = "no such key" if isinstance(value, dict) else f"{_json_type(value)} has no keys"
                raise JsonPathError(f"{walked}{step.group(0)}: {what}")
            value = value[key]
        else:
            index = int(step.group("index"))
            if not isinstance(value, list) or index >= len(value):
                what = f"only {len(value)} items" if isinstance(value, list) else f"{_json_type(value)} is no list"
                raise JsonPathError(f"{walked}{step.group(0)}: {what}")
            value = value[index]
        walked += step.group(0)
        position = step.end()
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but booleans are not numbers (True != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class HttpProvider:
    """Measures one `http:` check signal; `proxy` (an `http://host:port` URL) is used for every request when set."""

    def __init__(self, spec: HttpSignal, *, session: aiohttp.ClientSession, proxy: str | None = None) -> None:
        self.spec = spec
        self._session = session
        self._proxy = proxy
        self._body_pattern = compile_regex(spec.expect_body) if spec.expect_body is not None else None

    async def measure(self, ctx: SignalContext) -> Measurement:
        """Send the check request for `ctx`'s revision and judge the answer."""
        try:
            return await self._measure(ctx)
        except Exception as exc:
            # A provider's own bug must be this signal's ERROR, never an exception that ends the analysis.
            return Measurement(Phase.ERROR, None, one_line(f"the http provider failed: {describe_error(exc)}"))

    async def _measure(self, ctx: SignalContext) -> Measurement:
        try:
            url = render_url(self.spec.url, ctx.template_variables())
        except TemplateError as exc:
            return Measurement(Phase.ERROR, None, one_line(f"cannot render the URL: {exc}"))
        shown = f"{self.spec.method} {redact_url(url)}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._session.request(
                    self.spec.method, url, proxy=self._proxy, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.spec.timeout)) as resp:
                status = resp.status
                body = await _read_body(resp, MAX_BODY + 1)
        except TimeoutError:
            return self._failed(f"{shown}: no answer within {self.spec.timeout:g}s", started)
        except aiohttp.ClientProxyConnectionError as exc:
            # Not the workload: the daemon's own route to the cluster is down.
            return Measurement(Phase.ERROR, None, one_line(
                f"{shown}: the proxy {redact_url(self._proxy or '')} is unreachable: {describe_error(exc)}"))
        except aiohttp.ClientError as exc:
            return self._failed(f"{shown}: {connection_failure_reason(exc)}", started)
        latency = loop.time() - started
        details = {"status": float(status), "latency_seconds": latency}
        too_large = len(body) > MAX_BODY
        text = body[:MAX_BODY].decode(errors="replace")
        evidence = (excerpt(text),) if text.strip() else ()

        if status != self.spec.expect_status:
            return Measurement(Phase.FAILED, False, one_line(
                f"{shown}: HTTP {status}, expected {self.spec.expect_status}" + (f": {excerpt(text, 120)}"
                                                                                 if text.strip() else "")),
                evidence=evidence, details=details)
        if too_large and (self._body_pattern is not None or self.spec.expect_json is not None):
            return Measurement(Phase.FAILED, False, f"{shown}: the body is larger than {MAX_BODY} bytes",
                               evidence=evidence, details=details)
        if self._body_pattern is not None and not self._body_pattern.search(text):
            return Measurement(Phase.FAILED, False, one_line(
                f"{shown}: the body does not match /{self.spec.expect_body}/"), evidence=evidence, details=details)
        if self.spec.expect_json is not None:
            problem = _check_json(text, self.spec.expect_json)
            if problem is not None:
                return Measurement(Phase.FAILED, False, one_line(f"{shown}: {problem}"), evidence=evidence,
                                   details=details)
        return Measurement(Phase.OK, True, f"{shown}: HTTP {status} in {latency * 1000:.0f} ms", details=details)

    def _failed(self, message: str, started: float) -> Measurement:
        latency = asyncio.get_running_loop().time() - started
        return Measurement(Phase.FAILED, False, one_line(message), details={"latency_seconds": latency})


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body (`StreamReader.read(n)` stops at what has arrived, not at n)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_json(text: str, expectation: JsonExpectation) -> str | None:
    """None when the body holds the expected value, else what is wrong."""
    try:
        document = loads_bounded(text)
    except JsonTooDeep:
        return (f"the body is JSON nested deeper than {MAX_JSON_DEPTH} levels "
                f"(expected {expectation.path} = {json.dumps(expectation.equals)})")
    except ValueError:
        return f"the body is not JSON (expected {expectation.path} = {json.dumps(expectation.equals)})"
    try:
        actual = json_path_get(document, expectation.path)
    except JsonPathError as exc:
        return f"{exc} (expected {expectation.path} = {json.dumps(expectation.equals)})"
    if json_equal(actual, expectation.equals):
        return None
    return f"{expectation.path} is {excerpt(json.dumps(actual), 80)}, expected {json.dumps(expectation.equals)}"
