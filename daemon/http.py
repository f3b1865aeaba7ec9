"""The daemon's own HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/v1/analyses`.

`/healthz` answers 200 while the event loop runs. `/readyz` answers 503 with the reason until the
daemon has synced its first list (and, with leader election, says whether it leads) — Kubernetes
uses it for the readiness probe. `/metrics` is the Prometheus text format of the daemon's registry.
`/api/v1/analyses` is the JSON list of live and recent analyses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.metrics import Metrics
from daemon.settings import ListenAddress

ReadyCheck = Callable[[], tuple[bool, str]]
AnalysesView = Callable[[], Sequence[dict[str, Any]]]


def build_http_app(*, metrics: Metrics, ready: ReadyCheck, analyses: AnalysesView) -> web.Application:
    """The aiohttp application; `ready()` returns (ready, reason), `analyses()` the JSON-able list."""

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

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/v1/analyses", analyses_handler)
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

    @property
    def url(self) -> str:
        host = self._listen.host if self._listen.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"
