"""Local stand-ins for Slack and PagerDuty: real HTTP servers that check what notifiers send.

They exist so tests and `rollguard demo` exercise the real clients (rollguard's own Slack client,
the pagerduty library) over real sockets ("fake the network, not your own code"). Each receiver validates requests
against the vendor's documented format, answers the way the vendor does (including its error
shapes), records everything in `.received`, and can be told to fail the next requests
(`fail_next`, `stall_next`) to exercise retries and timeouts.

    async with SlackReceiver() as slack, PagerDutyReceiver() as pagerduty:
        ...  # point clients at slack.url / slack.webhook_url and pagerduty.url (+ pagerduty.ca_file)

Servers bind 127.0.0.1 on a free port. They are test and demo tools: no persistence, no auth beyond
the checks the vendors make.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["Fault", "LocalReceiver", "ReceivedRequest", "read_body", "respond"]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it, and what it answered."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    """Parsed JSON, a dict of form fields, or the raw text when it was neither."""
    status: int
    """The HTTP status the receiver answered."""
    response: Any
    """The JSON (or text) body the receiver answered."""
    accepted: bool
    """True when the request was valid and acted upon (not rejected, not a fault injection)."""
    errors: tuple[str, ...] = ()
    """Why it was rejected, in the vendor's words."""
    at: float = field(default_factory=time.time)
    """Wall-clock time it arrived (epoch seconds)."""


@dataclass
class Fault:
    """Answer the next `count` requests with `status` (and Retry-After) instead of handling them."""

    count: int
    status: int
    retry_after: float | None = None
    stall: bool = False
    """Never answer: hold the request until the receiver closes (tests client timeouts)."""
    path: str | None = None
    """Only requests to this path (e.g. "/api/chat.update") are failed; None: any request."""
    echo: bool = False
    """Put the request's headers and body into the error answer, as some proxies' error pages do:
    a client that copies error bodies into its messages then holds the credentials it sent."""
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = self.count


class LocalReceiver:
    """Base: an aiohttp server on 127.0.0.1:0 with recording and fault injection."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self._host = host
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._faults: list[Fault] = []
        self._closing = asyncio.Event()
        self.received: list[ReceivedRequest] = []
        """Every request, accepted or not, in arrival order."""

    # --- lifecycle -------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    async def _ssl_context(self) -> Any:
        """None for plain HTTP; subclasses that speak TLS return an SSLContext."""
        return None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        ssl_context = await self._ssl_context()
        # No access log: these servers run inside tests whose log output is asserted on.
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, 0, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        sockname = runner.addresses[0]
        self._port = int(sockname[1])

    async def close(self) -> None:
        # Stalled requests wait on this; release them so the server can shut down promptly.
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def origin(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._host}:{self.port}"

    _tls = False

    # --- fault injection -------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int,
        retry_after: float | None = None,
        path: str | None = None,
        echo: bool = False,
    ) -> None:
        """Answer the next `count` requests (to `path`, if given) with `status` in the vendor's shape;
        `echo` copies the request (credentials included) into the answer."""
        self._faults.append(Fault(count=count, status=status, retry_after=retry_after, path=path, echo=echo))

    def clear_faults(self) -> None:
        """Answer normally again (the outage is over)."""
        self._faults.clear()

    def stall_next(self, count: int = 1) -> None:
        """Never answer the next `count` requests (until the receiver closes): a client timeout."""
        self._faults.append(Fault(count=count, status=503, stall=True))

    def _fault_response(
        self, status: int, retry_after: float | None, echo: str | None
    ) -> tuple[Any, Mapping[str, str]]:
        """The body a vendor sends with an error status (`echo`: request text to include); subclasses override."""
        return {"error": echo or f"injected {status}"}, {}

    def _echo(self, request: web.Request, body: Any) -> str:
        """The request as an echoing proxy would quote it, credentials first (before any truncation)."""
        return f"request {request.method} {request.path_qs} headers={dict(request.headers)} body={body}"

    async def _maybe_fault(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        self._faults = [f for f in self._faults if f.remaining > 0]
        fault = next((f for f in self._faults if f.path is None or f.path == request.path), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.stall:
            await self._closing.wait()
        echo = self._echo(request, body) if fault.echo else None
        payload, extra_headers = self._fault_response(fault.status, fault.retry_after, echo)
        headers = dict(extra_headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        self._record(request, body, fault.status, payload, accepted=False, errors=(f"injected {fault.status}",))
        return respond(fault.status, payload, headers)

    # --- recording -------------------------------------------------------------------------------

    def _record(
        self,
        request: web.Request,
        body: Any,
        status: int,
        response: Any,
        *,
        accepted: bool,
        errors: tuple[str, ...] = (),
    ) -> None:
        self.received.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                status=status,
                response=response,
                accepted=accepted,
                errors=errors,
            )
        )


def respond(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response (or text/plain for a str payload)."""
    if isinstance(payload, str):
        return web.Response(status=status, text=payload, content_type="text/plain", headers=headers)
    return web.Response(
        status=status, text=json.dumps(payload), content_type="application/json", headers=headers
    )


async def read_body(request: web.Request) -> tuple[Any, str | None]:
    """The request body as JSON, form fields or text; and a parse error, if it was unreadable."""
    raw = await request.read()
    ctype = request.content_type
    if ctype == "application/json":
        try:
            return json.loads(raw.decode("utf-8")), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return raw.decode("utf-8", errors="replace"), f"invalid JSON: {exc}"
    if ctype == "application/x-www-form-urlencoded":
        # Parsed from the bytes already read (request.post() would want to read the stream again).
        text = raw.decode("utf-8", errors="replace")
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True)), None
    return raw.decode("utf-8", errors="replace"), None
