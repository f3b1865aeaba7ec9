"""The Alertmanager webhook receiver: `POST /api/v1/alerts/alertmanager` on the daemon's HTTP server.

Alertmanager's `webhook_configs` post payload version 4 here, with `Authorization: Bearer <token>`
(its `http_config.authorization`). The token comes from `ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN`, else
from the file named by `ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN_FILE` (a mounted Secret); without one the
endpoint refuses every push, because a pushed alert can roll a deploy back. Answers:

* 200 `{"received": N, "woke": M}`: N alerts read, M analyses woken to evaluate at once;
* 400 for a body that is not a version 4 payload (what is wrong, never the body);
* 401 without the right token; 403 when no token is configured; 413 for a body over 1 MiB.

The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog
from aiohttp import web

from daemon.alertmanager import MAX_PAYLOAD_BYTES, AlertHub, AlertPayloadError, parse_webhook
from daemon.http import read_token_file

log = structlog.get_logger("rollguard.alertmanager")

WEBHOOK_PATH = "/api/v1/alerts/alertmanager"
"""Where Alertmanager posts."""
WEBHOOK_TOKEN_ENV = "ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN"
"""Environment variable holding the webhook's bearer token."""
WEBHOOK_TOKEN_FILE_ENV = "ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN_FILE"
"""Environment variable naming a file (a mounted Secret) holding the token; used when the other is unset."""
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rollguard-alertmanager"'}


def webhook_token_from_env(env: Mapping[str, str], *, file: Path | None = None) -> str | None:
    """The webhook token, or None when none is configured; ValueError (naming the variable and file,
    never the value) when the file cannot be read or is empty. `file`: the settings' token file, used
    when neither variable is set."""
    if env.get(WEBHOOK_TOKEN_ENV, "").strip():
        return env[WEBHOOK_TOKEN_ENV].strip()
    path = env.get(WEBHOOK_TOKEN_FILE_ENV, "").strip() or (str(file) if file is not None else "")
    if not path:
        return None
    return read_token_file(path, variable=WEBHOOK_TOKEN_FILE_ENV)


def webhook_handler(hub: AlertHub, *, token: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler that feeds `hub` (see the module docstring for the answers)."""
    expected = token.encode() if token else None

    async def handle(request: web.Request) -> web.Response:
        if expected is None:
            return web.Response(status=403,
                                text=f"403: no webhook token is configured (set {WEBHOOK_TOKEN_FILE_ENV})\n")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return web.Response(status=401, text="401: a valid bearer token is required\n", headers=_CHALLENGE)
        if request.content_length is not None and request.content_length > MAX_PAYLOAD_BYTES:
            return web.Response(status=413, text=f"413: the body is over {MAX_PAYLOAD_BYTES} bytes\n")
        body = await request.content.read(MAX_PAYLOAD_BYTES + 1)
        if len(body) > MAX_PAYLOAD_BYTES:
            return web.Response(status=413, text=f"413: the body is over {MAX_PAYLOAD_BYTES} bytes\n")
        try:
            alerts = parse_webhook(body)
        except AlertPayloadError as exc:
            log.warning("alertmanager webhook refused", error=str(exc))
            return web.Response(status=400, text=f"400: {exc}\n")
        woke = hub.receive(alerts)
        log.info("alertmanager webhook", alerts=len(alerts), firing=sum(a.firing for a in alerts), woke=woke)
        return web.Response(text=json.dumps({"received": len(alerts), "woke": woke}),
                            content_type="application/json")

    return handle
