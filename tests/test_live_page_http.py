"""The live page and `/api/v2/analyses` as a browser and a script reach them (no cluster: the app alone)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from daemon.http import build_http_app
from daemon.metrics import Metrics

TOKEN = "s3cret-token-for-tests"
DOCUMENT = {"apiVersion": "rollguard.io/v2", "kind": "AnalysisList", "generatedAt": "2026-12-01T00:00:00.000Z",
            "items": []}


def app(token: str | None = None) -> Any:
    return build_http_app(metrics=Metrics(), ready=lambda: (True, "ok"), analyses=list, api_token=token,
                          analysis_list=lambda: DOCUMENT)


async def test_the_page_is_one_self_contained_file_that_loads_nothing_from_elsewhere() -> None:
    async with TestClient(TestServer(app())) as client:
        response = await client.get("/")
        body = await response.text()
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", body) == [], "no external asset"
        assert 'fetch("api/v2/analyses"' in body, "a relative URL: works behind a port-forward or the service proxy"
        answer = await client.get("/api/v2/analyses")
        assert (answer.status, await answer.json()) == (200, DOCUMENT)


async def test_with_a_token_the_v2_api_needs_it_and_the_page_stays_open() -> None:
    async with TestClient(TestServer(app(TOKEN))) as client:
        refused = await client.get("/api/v2/analyses")
        assert (refused.status, await refused.text()) == (
            401, "401: a bearer token is required (Authorization: Bearer <token>)\n")
        allowed = await client.get("/api/v2/analyses", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status == 200
        assert (await client.get("/")).status == 200
        assert TOKEN not in await (await client.get("/")).text()
