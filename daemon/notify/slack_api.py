"""The two Slack HTTP calls rollguard makes, on aiohttp: Web API methods and an incoming webhook.

`SlackWebClient.call("chat.postMessage", {...})` POSTs a JSON body with `Authorization: Bearer
<token>` to `<base_url><method>` and returns the answer's JSON object when Slack says `"ok": true`.
Anything else raises `SlackCallError`, which carries what Slack's error model distinguishes:

    HTTP 200 + {"ok": false, "error": code}   an API error: `code` set, `status` 200
    HTTP 429 + Retry-After                    rate limited: `retry_after` is the header's text
    HTTP 5xx, other non-200                   `status`, and `code` when the body is Slack's JSON
    a body that is not a JSON object, or      `code` None, `detail` says what was wrong
    larger than `MAX_ANSWER_BYTES`            (a proxy's HTML error page, a truncated answer)

`SlackWebhookClient.send({...})` POSTs JSON to the webhook URL and returns the status and answer text
("ok", "invalid_payload", "no_text", …) whatever the status: a webhook has no other error model.

Neither retries: the notification pipeline owns retrying. Each client keeps one aiohttp session,
made on first use because a session belongs to the event loop it was made in. Transport errors
(aiohttp.ClientError, TimeoutError, OSError) propagate unchanged for the caller to classify.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

MAX_ANSWER_BYTES = 1024 * 1024
"""The largest answer read: a chat.update answer echoes at most 50 blocks of 3000 characters."""

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class SlackCallError(Exception):
    """A Web API call Slack (or something in between) did not answer with `"ok": true`."""

    def __init__(self, *, method: str, status: int, code: str | None, detail: str,
                 retry_after: str | None) -> None:
        super().__init__(f"{method}: HTTP {status}, {detail}")
        self.method = method
        self.status = status
        self.code = code
        """Slack's error code ("channel_not_found", "ratelimited"); None when the body was not Slack's JSON."""
        self.detail = detail
        """`error <code>`, or what was wrong with the body (its start quoted: redact before showing it)."""
        self.retry_after = retry_after
        """The Retry-After header as sent (seconds or an HTTP date), or None."""


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    text: str
    """The body, at most `MAX_ANSWER_BYTES`, decoded leniently."""
    retry_after: str | None


_Raw = tuple[int, bytes | None, str | None]


class _Session:
    """One aiohttp session, made on first use; `timeout` is seconds per call, connect to last byte."""

    def __init__(self, *, timeout: float, ssl_context: ssl.SSLContext | None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> _Raw:
        """(status, body or None when it exceeded `MAX_ANSWER_BYTES`, Retry-After header)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        # NaN has no JSON form; refusing it (ValueError) beats sending a body Slack rejects.
        data = json.dumps(body, allow_nan=False).encode()
        # Not following redirects: a redirected call would carry the token (or the webhook body) to
        # wherever the answer points; a 3xx is reported like any other unexpected status.
        async with self._session.post(url, data=data, headers={**_JSON_HEADERS, **headers}, ssl=self._ssl,
                                      allow_redirects=False) as response:
            chunks = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks += chunk
                if len(chunks) > MAX_ANSWER_BYTES:
                    return response.status, None, response.headers.get("Retry-After")
            return response.status, bytes(chunks), response.headers.get("Retry-After")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None


def _quote(raw: bytes) -> str:
    """The start of an unexpected body on one line, as an error message quotes it."""
    return " ".join(raw[:200].decode("utf-8", errors="replace").split()) or "empty"


class SlackWebClient:
    """Slack Web API methods with a bot token. `base_url` ends with "/" ("https://slack.com/api/");
    the method name is joined to it as a relative URL."""

    def __init__(self, *, token: str, base_url: str, timeout: float, ssl_context: ssl.SSLContext | None) -> None:
        self._auth = {"Authorization": f"Bearer {token}"}
        self._base_url = base_url
        self._session = _Session(timeout=timeout, ssl_context=ssl_context)

    async def call(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The answer of one `"ok": true` call; `SlackCallError` otherwise (see the module docstring)."""
        url = urllib.parse.urljoin(self._base_url, method)
        status, raw, retry_after = await self._session.post(url, body, self._auth)

        def fail(code: str | None, detail: str) -> SlackCallError:
            return SlackCallError(method=method, status=status, code=code, detail=detail, retry_after=retry_after)

        if raw is None:
            raise fail(None, f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise fail(None, f"answer is not JSON: {_quote(raw)}") from None
        if not isinstance(answer, dict):
            raise fail(None, f"answer is not a JSON object: {_quote(raw)}")
        if status == 200 and answer.get("ok") is True:
            return answer
        code = str(answer.get("error") or "unknown_error")
        raise fail(code, f"error {code}")

    async def aclose(self) -> None:
        await self._session.aclose()


class SlackWebhookClient:
    """One incoming webhook (`url` is a secret: its path authorises posting)."""

    def __init__(self, *, url: str, timeout: float, ssl_context: ssl.SSLContext | None) -> None:
        self._url = url
        self._session = _Session(timeout=timeout, ssl_context=ssl_context)

    async def send(self, body: Mapping[str, Any]) -> WebhookAnswer:
        status, raw, retry_after = await self._session.post(self._url, body, {})
        text = f"answer larger than {MAX_ANSWER_BYTES} bytes" if raw is None else raw.decode("utf-8", "replace")
        return WebhookAnswer(status=status, text=text, retry_after=retry_after)

    async def aclose(self) -> None:
        await self._session.aclose()
