"""WebSocket check signals: connect, optionally send one message, expect a matching reply.

`WebSocketProvider` renders the `ws://` / `wss://` URL for the revision (`render_url`), connects
through the daemon's pooled session (through `proxy` when set: aiohttp then writes the absolute
`ws://svc.ns:port/path` URL on the request line with the Upgrade headers, which is what the
simulated cluster's service proxy routes, `sim.services`), sends `spec.send` if set, and
waits for a text (or binary, decoded as UTF-8) message in which `spec.expect` is found.

`expect` is a Python regular expression, searched in each message (`re.search`), as the rule model
documents and the loader validates. A plain word is its own regex, so `expect: PONG` is the
substring check one would guess; to match JSON literally, escape the metacharacters
(`\\{"type":"PONG"\\}`) or match a part (`"type":\\s*"PONG"`). Messages that do not match are
skipped (a server may greet first); with no `expect`, a completed handshake (and send) passes.

The whole exchange, handshake included, must finish within `spec.timeout` seconds. A refused
connection, a failed handshake (e.g. 503 "no ready endpoints"), a close before the answer or no
matching message in time is the workload failing: FAILED, with the last messages received as
evidence. The URL template not rendering, or the proxy itself being unreachable, is ERROR.

Bounds: one message may be at most `MAX_MESSAGE_BYTES` (aiohttp's `max_msg_size`; a larger one fails
the check: "a message is larger than …"); at most `MAX_MESSAGES` messages are read per check (a
server chattering without ever answering fails the check then, not at the timeout); only the last
few non-matching messages are kept, each cut to 200 characters, as evidence. Anything unexpected
inside the provider is this signal's ERROR.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiohttp

from daemon.rules.model import WebSocketSignal
from daemon.rules.regexes import compile_regex
from daemon.rules.templates import TemplateError, render_url
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.session import connection_failure_reason, describe_error, excerpt, one_line, redact_url

__all__ = ["MAX_MESSAGES", "MAX_MESSAGE_BYTES", "WebSocketProvider"]

_EVIDENCE_MESSAGES = 3
MAX_MESSAGE_BYTES = 1 << 20
"""Bytes of one WebSocket message accepted at most (aiohttp's `max_msg_size`)."""
MAX_MESSAGES = 1000
"""Messages read per check at most without one matching `expect`."""
# Bound on waiting for the server's close frame after the check is decided: a server that never
# answers the close must not hold the measurement beyond its timeout by more than this.
_CLOSE_WAIT = 1.0


class WebSocketProvider:
    """Measures one `websocket:` check signal; `proxy` (an `http://host:port` URL) is used when set."""

    def __init__(self, spec: WebSocketSignal, *, session: aiohttp.ClientSession, proxy: str | None = None) -> None:
        self.spec = spec
        self._session = session
        self._proxy = proxy
        self._expect = compile_regex(spec.expect) if spec.expect is not None else None

    async def measure(self, ctx: SignalContext) -> Measurement:
        """Run the exchange for `ctx`'s revision and judge it."""
        try:
            return await self._measure(ctx)
        except Exception as exc:
            # A provider's own bug must be this signal's ERROR, never an exception that ends the analysis.
            return Measurement(Phase.ERROR, None, one_line(f"the websocket provider failed: {describe_error(exc)}"))

    async def _measure(self, ctx: SignalContext) -> Measurement:
        try:
            url = render_url(self.spec.url, ctx.template_variables())
        except TemplateError as exc:
            return Measurement(Phase.ERROR, None, one_line(f"cannot render the URL: {exc}"))
        shown = redact_url(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        received: deque[str] = deque(maxlen=_EVIDENCE_MESSAGES)
        count = 0

        def failed(reason: str) -> Measurement:
            return Measurement(Phase.FAILED, False, one_line(f"{shown}: {reason}"),
                               evidence=tuple(received),
                               details={"latency_seconds": loop.time() - started})

        try:
            async with asyncio.timeout(self.spec.timeout):
                async with self._session.ws_connect(
                        url, proxy=self._proxy, autoping=True, heartbeat=None, max_msg_size=MAX_MESSAGE_BYTES,
                        timeout=aiohttp.ClientWSTimeout(ws_close=min(_CLOSE_WAIT, self.spec.timeout))) as ws:
                    if self.spec.send is not None:
                        await ws.send_str(self.spec.send)
                    if self._expect is None:
                        return self._passed(shown, "connected" + (" and sent" if self.spec.send else ""), started)
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            text = str(message.data)
                        elif message.type is aiohttp.WSMsgType.BINARY:
                            text = bytes(message.data).decode(errors="replace")
                        else:  # ERROR: a protocol violation; CLOSE/CLOSED end the iteration
                            error = ws.exception() or message.data  # aiohttp puts the error in either
                            if (isinstance(error, aiohttp.WebSocketError)
                                    and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG):
                                return failed(f"a message is larger than {MAX_MESSAGE_BYTES} bytes "
                                              "(the cap on one message)")
                            return failed(f"WebSocket error before an answer matching /{self.spec.expect}/: "
                                          f"{describe_error(ws.exception() or Exception(str(message.data)))}")
                        if self._expect.search(text):
                            return self._passed(shown, f"answered {excerpt(text, 80)!r}", started)
                        received.append(excerpt(text))
                        count += 1
                        if count >= MAX_MESSAGES:
                            return failed(f"read {count} messages without one matching /{self.spec.expect}/")
                    return failed(f"the server closed the WebSocket (code {ws.close_code}) before an answer "
                                  f"matching /{self.spec.expect}/")
        except TimeoutError:
            what = f"no message matching /{self.spec.expect}/" if self._expect is not None else "no handshake"
            seen = f" ({count} other message{'' if count == 1 else 's'})" if count else ""
            return failed(f"{what} within {self.spec.timeout:g}s{seen}")
        except aiohttp.WSServerHandshakeError as exc:
            return failed(f"WebSocket handshake failed: HTTP {exc.status} {exc.message}")
        except aiohttp.ClientProxyConnectionError as exc:
            # Not the workload: the daemon's own route to the cluster is down.
            return Measurement(Phase.ERROR, None, one_line(
                f"{shown}: the proxy {redact_url(self._proxy or '')} is unreachable: {describe_error(exc)}"))
        except aiohttp.ClientError as exc:
            return failed(connection_failure_reason(exc))

    @staticmethod
    def _passed(shown: str, what: str, started: float) -> Measurement:
        latency = asyncio.get_running_loop().time() - started
        return Measurement(Phase.OK, True, one_line(f"{shown}: {what} in {latency * 1000:.0f} ms"),
                           details={"latency_seconds": latency})
