"""What the network-facing signal providers share: the pooled aiohttp session and safe one-line messages.

One `aiohttp.ClientSession` serves every HTTP check, WebSocket check and Prometheus query of the
daemon (one connection pool, one place to close). `new_session()` makes it the way checks need it:

* no cookie jar: the session talks to every workload in the cluster, and a cookie set by one
  service must never ride along on a check of another;
* `trust_env=False`: a `HTTP_PROXY` in the daemon's environment must not silently reroute checks;
  the in-cluster proxy, when one is needed, is passed explicitly (`proxy=`) per request;
* a total connection limit, so a thousand concurrent checks queue instead of exhausting file
  descriptors.

Messages built from URLs and exceptions go through `redact_url` and `one_line`: a URL's
`user:password@` and secret query values (`?token=…`) never reach a Measurement, a log line, an Event
or a notification, and a message is always one line of bounded length.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from yarl import URL

from daemon import redaction

USER_AGENT = "rollguard"
"""User-Agent of every request rollguard makes to workloads and Prometheus."""

_WHITESPACE = re.compile(r"\s+")


def new_session(*, limit: int = 256) -> aiohttp.ClientSession:
    """A session for checks and queries: no cookies, no proxy from the environment, at most `limit` connections.

    Must be created inside a running event loop and closed by its owner (`await session.close()`).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def redact_url(url: str | URL) -> str:
    """`url` without its user-info (`http://user:pass@host/x` → `http://host/x`) and with the values of
    secret-looking query parameters (`?token=…`, `sig`, `api_key`, …) replaced by [REDACTED]; safe for messages."""
    return redaction.redact_url(url)


def redact_text(text: str) -> str:
    """`text` with every URL's user-info and secret query values removed (for exception messages quoting URLs)."""
    return redaction.redact_text(text)


def one_line(text: str, limit: int = 300) -> str:
    """`text` with whitespace runs (newlines included) collapsed to one space, cut to `limit` characters."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def excerpt(text: str, limit: int = 200) -> str:
    """The first `limit` characters of `text` on one line, for `Measurement.evidence`."""
    return one_line(text, limit)


def describe_error(exc: BaseException) -> str:
    """`ExceptionType: message` on one line, URLs redacted; the type alone when the message is empty."""
    text = str(exc)
    name = type(exc).__name__
    return one_line(redact_text(f"{name}: {text}" if text else name))


def connection_failure_reason(exc: aiohttp.ClientError) -> str:
    """Why a request got no answer, for an SRE: refused, unknown host, reset, TLS; else the exception."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve the host ({describe_error(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {describe_error(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return describe_error(exc)


MAX_JSON_DEPTH = 64
"""Nesting levels of arrays and objects a JSON answer (check body, Prometheus answer) may have; deeper is
refused with a message instead of letting the decoder hit Python's recursion limit."""

# A JSON string (skipped whole, brackets inside it do not nest) or one bracket.
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JsonTooDeep(ValueError):
    """A JSON text nests deeper than allowed; the message says the limit."""


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)`, but JsonTooDeep (a ValueError) when arrays/objects nest deeper than `max_depth`.

    Never raises RecursionError. The depth scan only runs when the text has more than `max_depth`
    opening brackets (counted at C speed), so ordinary answers pay almost nothing for it.
    """
    decoded = text.decode(errors="replace") if isinstance(text, bytes) else text
    if decoded.count("[") + decoded.count("{") > max_depth:
        depth = 0
        for token in _JSON_NESTING.finditer(decoded):
            char = token.group()
            if char in "[{":
                depth += 1
                if depth > max_depth:
                    raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
            elif char in "]}":
                depth -= 1
    try:
        return json.loads(decoded)
    except RecursionError:  # a nesting the scan did not see (it cannot happen, but never let it out)
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
