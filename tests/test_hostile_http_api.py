"""The daemon's HTTP API behind a bearer token, over real HTTP: `/api/v1/*` guarded, probes and metrics open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.http import HttpServer, api_token_from_env, build_http_app
from daemon.metrics import Metrics
from daemon.settings import ListenAddress

TOKEN = "api-token-0123456789abcdef"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = build_http_app(metrics=Metrics(), ready=lambda: (True, "ready"),
                         analyses=lambda: [{"deployment": "staging/backend"}], api_token=TOKEN)
    http = HttpServer(app, ListenAddress("127.0.0.1", 0))
    await http.start()
    try:
        yield http.url
    finally:
        await http.stop()


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, await response.text(), response.headers.get("WWW-Authenticate", "")


async def test_the_api_needs_the_bearer_token(server: str) -> None:
    assert await fetch(f"{server}/api/v1/analyses") == (
        401, "401: a bearer token is required (Authorization: Bearer <token>)\n", 'Bearer realm="rollguard"')
    assert await fetch(f"{server}/api/v1/analyses", {"Authorization": "Bearer wrong-token"}) == (
        401, "401: the bearer token is not valid\n", 'Bearer realm="rollguard"')
    status, body, _ = await fetch(f"{server}/api/v1/analyses", {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body) == (200, '{\n "analyses": [\n  {\n   "deployment": "staging/backend"\n  }\n ]\n}')


async def test_probes_and_metrics_stay_open(server: str) -> None:
    assert (await fetch(f"{server}/healthz"))[:2] == (200, "ok\n")
    assert (await fetch(f"{server}/readyz"))[:2] == (200, "ready\n")
    status, body, _ = await fetch(f"{server}/metrics")
    assert status == 200
    assert "# TYPE" in body


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    assert api_token_from_env({}) is None
    assert api_token_from_env({"ROLLGUARD_API_TOKEN": TOKEN}) == TOKEN
    assert api_token_from_env({"ROLLGUARD_API_TOKEN_FILE": str(secret)}) == TOKEN
    with pytest.raises(ValueError, match=f"^ROLLGUARD_API_TOKEN_FILE: cannot read {secret}x: No such file"):
        api_token_from_env({"ROLLGUARD_API_TOKEN_FILE": f"{secret}x"})
    secret.write_text("\n")
    with pytest.raises(ValueError, match=f"^ROLLGUARD_API_TOKEN_FILE: {secret} is empty$"):
        api_token_from_env({"ROLLGUARD_API_TOKEN_FILE": str(secret)})
