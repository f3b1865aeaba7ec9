"""The daemon's own HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/v1/analyses`.

`/healthz` answers 200 while the event loop runs. `/readyz` answers 503 with the reason until the
daemon has synced its first list (and, with leader election, says whether it leads) — Kubernetes
uses it for the readiness probe. `/metrics` is the Prometheus text format of the daemon's registry.
`/api/v1/analyses` is the JSON list of live and recent analyses (kept as it was, for existing
clients); `/api/v2/analyses` is the documented, versioned document of `daemon.view.schema` (RFC 3339
times, signal histories, rule timers). `/` is the live page, one self-contained HTML file that polls
`/api/v2/analyses` (`daemon/view/page.html`: no external assets, works through a port-forward).

With an API token (`build_http_app(api_token=...)`, read by `api_token_from_env` from
`ROLLGUARD_API_TOKEN` or the file named by `ROLLGUARD_API_TOKEN_FILE`), every `/api/v1/*` request must
carry `Authorization: Bearer <token>` (compared in constant time) or gets 401; so does `/api/v2/*`
(the live page asks for the token and sends it). `/healthz`, `/readyz`
and `/metrics` stay open: the kubelet's probes and Prometheus' scrape carry no token, and they
expose nothing about the workloads (the NetworkPolicy of the chart limits who reaches them).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.metrics import Metrics
from daemon.settings import ListenAddress
from daemon.view.page import PAGE_POLICY, live_page

ReadyCheck = Callable[[], tuple[bool, str]]
AnalysesView = Callable[[], Sequence[dict[str, Any]]]
AnalysisList = Callable[[], Mapping[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_TOKEN_ENV = "ROLLGUARD_API_TOKEN"
"""Environment variable holding the bearer token of `/api/v1/*`."""
API_TOKEN_FILE_ENV = "ROLLGUARD_API_TOKEN_FILE"
"""Environment variable naming a file (a mounted Secret) that holds the token; used when the other is unset."""
API_PREFIX = "/api/"
"""Every versioned API path (`/api/v1/*`, `/api/v2/*`) needs the token; `/` (the page, no data) does not."""
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rollguard"'}


def api_token_from_env(env: Mapping[str, str]) -> str | None:
    """The API token from `ROLLGUARD_API_TOKEN`, else from the file `ROLLGUARD_API_TOKEN_FILE` names; None: no token.

    ValueError (naming the variable and the file, never the value) when the file cannot be read or is empty.
    """
    if env.get(API_TOKEN_ENV, "").strip():
        return env[API_TOKEN_ENV].strip()
    path = env.get(API_TOKEN_FILE_ENV, "").strip()
    if not path:
        return None
    return read_token_file(path, variable=API_TOKEN_FILE_ENV)


def read_token_file(path: str, *, variable: str) -> str:
    """The token in file `path` (whitespace stripped); ValueError naming `variable` when it is unreadable
    or empty (never the file's content)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{variable}: cannot read {path}: {reason}") from None
    if not token:
        raise ValueError(f"{variable}: {path} is empty")
    return token


def _bearer_guard(token: str, *, own_token_paths: frozenset[str] = frozenset()) -> Any:
    expected = token.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        # A receiver with its own token (Alertmanager's webhook) checks it itself.
        if not request.path.startswith(API_PREFIX) or request.path in own_token_paths:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return web.Response(status=401, text="401: a bearer token is required (Authorization: Bearer <token>)\n",
                                headers=_CHALLENGE)
        if not hmac.compare_digest(given.strip().encode(), expected):
            return web.Response(status=401, text="401: the bearer token is not valid\n", headers=_CHALLENGE)
        return await handler(request)

    return guard


def build_http_app(*, metrics: Metrics, ready: ReadyCheck, analyses: AnalysesView,
                   api_token: str | None = None, analysis_list: AnalysisList | None = None,
                   alert_webhook: tuple[str, Handler] | None = None) -> web.Application:
    """The aiohttp application; `ready()` returns (ready, reason), `analyses()` the JSON-able list,
    `analysis_list()` the `/api/v2/analyses` document (without it, that path and `/` are not served).

    `api_token`: when set, `/api/v1/*` requires `Authorization: Bearer <api_token>`.
    `alert_webhook`: (path, handler) of the Alertmanager webhook, which checks its own token.
    """

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ok, reason = ready()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def metrics_handler(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def analyses_handler(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"analyses": list(analyses())}, indent=1, default=str),
                            content_type="application/json")

    async def analysis_list_handler(_request: web.Request) -> web.Response:
        assert analysis_list is not None
        return web.Response(text=json.dumps(analysis_list(), indent=1), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def page_handler(_request: web.Request) -> web.Response:
        return web.Response(body=live_page(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Content-Security-Policy": PAGE_POLICY})

    own = frozenset({alert_webhook[0]}) if alert_webhook else frozenset()
    app = web.Application(middlewares=[_bearer_guard(api_token, own_token_paths=own)] if api_token else [])
    if analysis_list is not None:
        app.router.add_get("/", page_handler)
        app.router.add_get("/api/v2/analyses", analysis_list_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/v1/analyses", analyses_handler)
    if alert_webhook is not None:
        app.router.add_post(alert_webhook[0], alert_webhook[1])
    return app


class HttpServer:
    """Runs an aiohttp application on an address; `port` is the bound port (useful with port 0)."""

    def __init__(self, app: web.Application, listen: ListenAddress) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._listen = listen
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen.host, self._listen.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._listen.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def serve(self) -> None:
        """Serve until cancelled (a guarded root task; `start()` first so the port is known)."""
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    @property
    def url(self) -> str:
        host = self._listen.host if self._listen.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"
