"""The Prometheus HTTP API client: one PromQL instant query per call, coalesced; range queries for
statistical comparisons (`query_range`, not coalesced: each belongs to one rollout's window).

`PrometheusClient` sends `GET /api/v1/query?query=…&time=…` through the daemon's pooled aiohttp
session, with `Authorization: Bearer <token>` when a token is given (`read_bearer_token`: the file
ROLLGUARD_PROMETHEUS_TOKEN_FILE names, read once at start) and verifying the server against a CA of
its own when one is given (`ca_ssl_context`: ROLLGUARD_PROMETHEUS_CA_FILE). The provider that turns
answers into measurements is `daemon.signals.prometheus`.

**Coalescing.** One policy selecting a thousand Deployments can ask the same query (or a thousand
analyses can share a global one) in the same tick. Queries for "now" are evaluated at the current
time rounded down to a multiple of `tick` seconds and sent with that explicit `time`, so identical
queries within a tick have identical keys `(query, time)`; a `QueryCoalescer` sends each key once
(every concurrent caller awaits the one request) and reuses a completed answer for `tick` seconds.
Failures are shared by the callers that were waiting but never reused.

Exceptions (raised by `PrometheusClient.query`; the provider turns them into ERROR)::

    PrometheusError
     ├── PrometheusUnavailable   refused, reset, timed out, or an answer that is not the Prometheus API
     ├── PrometheusAnswerTooLarge  over MAX_RESPONSE_BYTES bytes or MAX_SERIES series
     └── PrometheusQueryError    Prometheus answered `status: error` (.error_type, .error)

`PrometheusConfigError` (a `SettingsError`) is raised at start only, by `read_bearer_token` and
`ca_ssl_context`, naming the variable and the file, never the token.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import aiohttp
from yarl import URL

from daemon.clock import Clock, SystemClock
from daemon.redaction import SCRUBBER
from daemon.signals.coalesce import QueryCoalescer
from daemon.signals.prometheus_auth import (
    CA_FILE_ENV,
    TOKEN_FILE_ENV,
    PrometheusConfigError,
    SecretRedactor,
    ca_ssl_context,
    read_bearer_token,
)
from daemon.signals.session import describe_error, excerpt, loads_bounded, one_line, redact_url

__all__ = [
    "CA_FILE_ENV",
    "MAX_RESPONSE_BYTES",
    "MAX_SERIES",
    "TOKEN_FILE_ENV",
    "PrometheusAnswerTooLarge",
    "PrometheusClient",
    "PrometheusConfigError",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusUnavailable",
    "QueryCoalescer",
    "QueryResult",
    "RangeSeries",
    "Sample",
    "ca_ssl_context",
    "read_bearer_token",
]

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Bytes of one query answer read at most; a larger answer is ERROR (one number needs a few hundred)."""
MAX_SERIES = 10_000
"""Series in one answer accepted at most; more is ERROR asking to narrow the query."""
MAX_RANGE_POINTS = 1000
"""Points of one series a range query asks for at most (the window is shortened to its newest part);
an answer with more is ERROR."""
_DECODE_OFF_LOOP_BYTES = 256 * 1024
"""Answers at least this large are decoded in a worker thread, so an 8 MiB answer does not block the loop."""


class PrometheusError(Exception):
    """A query could not be answered; the message is one line, safe to show (no credentials)."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus could not be reached, or did not answer as the Prometheus HTTP API does."""


class PrometheusAnswerTooLarge(PrometheusError):
    """The answer was over MAX_RESPONSE_BYTES bytes or MAX_SERIES series."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered `status: error`: a bad query (`bad_data`), an execution error, a timeout."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__(one_line(f"Prometheus rejected the query ({error_type}): {error}"))
        self.error_type = error_type
        """Prometheus' `errorType`: bad_data, execution, timeout, canceled, internal, unavailable."""
        self.error = error
        """Prometheus' own `error` message, as it sent it."""


@dataclass(frozen=True)
class Sample:
    """One sample of an instant-query result: a series' labels and its value (NaN and ±Inf included)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    """The `data` of a successful instant query."""

    result_type: str
    """`vector`, `scalar`, `matrix` or `string`, as Prometheus names it."""
    samples: tuple[Sample, ...]
    """Vector: one per series; scalar: exactly one (no labels); matrix: one per series with its last value."""
    evaluated_at: float | None
    """The evaluation time sent with the query (epoch seconds), None when Prometheus picked "now"."""
    warnings: tuple[str, ...] = ()
    """Prometheus' `warnings`, if any."""


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range-query answer: its labels and its values in time order (NaN and ±Inf included)."""

    labels: Mapping[str, str]
    values: tuple[float, ...]


# ----- the client -----

class Batcher(Protocol):
    """Sends queries of one shape and time together (`daemon.signals.batching.QueryBatcher`)."""

    async def query(self, shape: str, promql: str, at: float) -> QueryResult: ...

    def submit(self, shape: str, promql: str, at: float) -> asyncio.Future[QueryResult]: ...

    async def aclose(self) -> None: ...


_POST_OVER_CHARS = 4000
"""Queries longer than this (batches) are POSTed as a form: proxies limit URL lengths to a few kB."""


class PrometheusClient:
    """Instant queries against one Prometheus, through a pooled session the caller owns and closes.

    `base_url` may carry a path prefix (`http://prom:9090/prometheus`) and basic-auth user-info
    (sent as an Authorization header by aiohttp, never shown in messages). `bearer_token`, instead,
    is sent as `Authorization: Bearer <token>` with every query (never shown, and registered with the
    process-wide scrubber). `ssl_context` verifies an https Prometheus (None: the system's CAs). `timeout` bounds each
    request in seconds (and is passed on as Prometheus' own evaluation timeout). `tick` is the
    coalescing window in seconds (see the module docstring; 0 sends "now" queries without `time`
    and only shares concurrent identical requests). `clock` must be the clock Prometheus' samples
    live on: the real one, also under the simulated cluster.
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *, timeout: float = 10.0,
                 tick: float = 1.0, clock: Clock | None = None, bearer_token: str | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 batcher: Callable[[Callable[[str, float], Coroutine[Any, Any, QueryResult]]], Batcher] | None = None,
                 ) -> None:
        if bearer_token is not None and URL(base_url).user is not None:
            raise PrometheusConfigError("the Prometheus URL carries user-info and a bearer token is set as well: "
                                        "use one of them")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if tick < 0:
            raise ValueError(f"tick must not be negative, not {tick}")
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._tick = tick
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        if bearer_token:
            SCRUBBER.add(SecretRedactor(bearer_token))
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._coalescer: QueryCoalescer[tuple[str, float | None], QueryResult] = QueryCoalescer(
            reuse_for=tick, name="prometheus-query")
        self.requests_sent = 0
        """Requests actually sent (after coalescing), for the daemon's own metrics."""
        self.batcher = batcher(self._fetch) if batcher is not None else None
        """Batches queries that pass their `shape` (see `daemon.signals.batching`); None: one request each."""

    @property
    def url(self) -> str:
        """The base URL without user-info, for messages and logs."""
        return redact_url(self._base_url)

    async def query(self, promql: str, *, at: float | None = None, shape: str | None = None) -> QueryResult:
        """Evaluate `promql` at `at` (epoch seconds; None: now, rounded down to the tick). Raises PrometheusError.

        `shape`: the template `promql` was rendered from; queries of one shape and time may be batched."""
        when = at
        if when is None and self._tick > 0:
            when = math.floor(self._clock.now() / self._tick) * self._tick
        if self.batcher is not None and shape is not None and when is not None:
            # A batch member is a future the batch resolves: awaited without a fetch task of its own.
            return await self._coalescer.run_submitted((promql, when),
                                                       partial(self.batcher.submit, shape, promql, when))
        return await self._coalescer.run((promql, when), partial(self._fetch, promql, when))

    async def query_range(self, promql: str, *, start: float, end: float, step: float) -> tuple[RangeSeries, ...]:
        """`promql` evaluated every `step` seconds from `start` to `end` (epoch seconds), at most
        MAX_RANGE_POINTS points: a longer window keeps its newest part. Raises PrometheusError."""
        if step <= 0 or end < start:
            raise ValueError(f"a range query needs step > 0 and end >= start, not step={step}, {start}..{end}")
        start = max(start, end - step * (MAX_RANGE_POINTS - 1))
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}",
                  "timeout": f"{self._timeout:g}"}
        status, raw = await self._get("query_range", params)
        if len(raw) >= _DECODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(_decode_range, raw, status, url=self.url)
        return _decode_range(raw, status, url=self.url)

    async def aclose(self) -> None:
        """Cancel queries still in flight (the session is the caller's to close)."""
        await self._coalescer.aclose()
        if self.batcher is not None:
            await self.batcher.aclose()

    async def _fetch(self, promql: str, at: float | None) -> QueryResult:
        params = {"query": promql, "timeout": f"{self._timeout:g}"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, raw = await self._get("query", params)
        if len(raw) >= _DECODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(_decode, raw, status, url=self.url, at=at)
        return _decode(raw, status, url=self.url, at=at)

    async def _get(self, endpoint: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        """The status and the body (at most MAX_RESPONSE_BYTES) of `GET /api/v1/<endpoint>`."""
        self.requests_sent += 1
        try:
            url = f"{self._base_url}/api/v1/{endpoint}"
            length = sum(len(v) for v in params.values())
            request = (partial(self._session.post, url, data=dict(params)) if length > _POST_OVER_CHARS
                       else partial(self._session.get, url, params=dict(params)))
            async with request(headers=self._headers, ssl=self._ssl,
                               timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
                status = resp.status
                raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                while len(raw) <= MAX_RESPONSE_BYTES:  # read(n) returns what has arrived, at most n
                    more = await resp.content.read(MAX_RESPONSE_BYTES + 1 - len(raw))
                    if not more:
                        break
                    raw += more
        except TimeoutError:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} did not answer within {self._timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {describe_error(exc)}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise PrometheusAnswerTooLarge(f"Prometheus at {self.url} answered more than {MAX_RESPONSE_BYTES} bytes")
        return status, raw


def _decode_range(raw: bytes, status: int, *, url: str) -> tuple[RangeSeries, ...]:
    """The series of a `/api/v1/query_range` answer, or the PrometheusError it stands for."""
    data = _body(raw, status, url=url).get("data")
    try:
        assert isinstance(data, dict)
        assert data["resultType"] == "matrix"
        result = data["result"]
        if len(result) > MAX_SERIES:
            raise PrometheusAnswerTooLarge(f"Prometheus at {url} answered {len(result)} series, more than "
                                           f"{MAX_SERIES}: narrow the query")
        series = []
        for r in result:
            points = r["values"]
            if len(points) > MAX_RANGE_POINTS:
                raise PrometheusAnswerTooLarge(f"Prometheus at {url} answered {len(points)} points for one series, "
                                               f"more than the {MAX_RANGE_POINTS} asked for")
            series.append(RangeSeries(dict(r.get("metric") or {}), tuple(float(p[1]) for p in points)))
    except (AssertionError, KeyError, IndexError, TypeError, ValueError):
        raise PrometheusUnavailable(f"Prometheus at {url} answered a malformed range query result: "
                                    f"{excerpt(json.dumps(data)[:1024], 120)}") from None
    return tuple(series)


def _body(raw: bytes, status: int, *, url: str) -> dict[str, Any]:
    """The body of a successful Prometheus API answer, or the PrometheusError it stands for."""
    problem = None
    try:
        body = loads_bounded(raw)
    except ValueError as exc:
        body, problem = None, str(exc) if "nested deeper" in str(exc) else None
    if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
        # Not the Prometheus API: a proxy's error page, a wrong base URL.
        text = problem or excerpt(raw[:1024].decode(errors="replace"), 120) or "(empty body)"
        raise PrometheusUnavailable(f"Prometheus at {url} answered HTTP {status} that is not a Prometheus API "
                                    f"response: {text}")
    if body["status"] == "error":
        raise PrometheusQueryError(str(body.get("errorType") or f"HTTP {status}"), str(body.get("error") or ""))
    return body


def _decode(raw: bytes, status: int, *, url: str, at: float | None) -> QueryResult:
    """The QueryResult in a `/api/v1/query` answer, or the PrometheusError it stands for."""
    body = _body(raw, status, url=url)
    data = body.get("data")
    try:
        assert isinstance(data, dict)
        result_type = str(data["resultType"])
        result = data["result"]
        if result_type in ("vector", "matrix") and len(result) > MAX_SERIES:
            raise PrometheusAnswerTooLarge(f"Prometheus at {url} answered {len(result)} series, more than "
                                           f"{MAX_SERIES}: narrow the query")
        samples: list[Sample]
        if result_type == "scalar":
            samples = [Sample({}, float(result[1]))]
        elif result_type == "vector":
            samples = [Sample(dict(r.get("metric") or {}), float(r["value"][1])) for r in result]
        elif result_type == "matrix":
            samples = [Sample(dict(r.get("metric") or {}), float(r["values"][-1][1])) for r in result if r["values"]]
        else:  # "string": nothing numeric in it
            samples = []
    except (AssertionError, KeyError, IndexError, TypeError, ValueError):
        raise PrometheusUnavailable(f"Prometheus at {url} answered a malformed query result: "
                                    f"{excerpt(json.dumps(data)[:1024], 120)}") from None
    warnings = tuple(str(w) for w in body.get("warnings") or ())
    return QueryResult(result_type, tuple(samples), at, warnings)
