"""Prometheus behind a bearer token and a private CA: what the chart's prometheus.bearerTokenSecret and
prometheus.caSecret give the daemon (ROLLGUARD_PROMETHEUS_TOKEN_FILE, ROLLGUARD_PROMETHEUS_CA_FILE).

The Prometheus here is a loopback aiohttp server speaking `/api/v1/query` that answers 401 unless the
request carries the expected `Authorization: Bearer` header; the TLS one presents a certificate signed
by a CA the test makes with openssl (`sim.receivers.tls`), which the system does not trust.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from daemon.clock import FakeClock
from daemon.kube.rollout_state import RolloutId
from daemon.measure import ProviderMeasurer
from daemon.measurement import Phase, SignalContext
from daemon.redaction import SCRUBBER
from daemon.rollout import Rollout
from daemon.rules.loader import load_file
from daemon.settings import LogSettings, SettingsError, run_settings
from daemon.signals.prometheus import PrometheusClient, ca_ssl_context, read_bearer_token
from sim.receivers.tls import TlsMaterial, make_local_tls

TOKEN = "prom-bearer-0123456789-never-leak"
POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {name: prom}
spec:
  selector: {namespaces: [staging]}
  signals:
    error_rate: {prometheus: {query: "sum(rate(http_requests_total[1m]))"}}
  rules:
    - {name: bad, when: "error_rate > 0.05", action: rollback}
"""


@asynccontextmanager
async def guarded_prometheus(*, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[str]]]:
    """A `/api/v1/query` that answers 0.02 only to `Bearer TOKEN`; yields its URL and every Authorization seen."""
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"status": "error", "errorType": "unauthorized",
                                      "error": "missing or wrong bearer token"}, status=401)
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1_764_151_200, "0.02"]}]}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}", seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def tls() -> AsyncIterator[TlsMaterial]:
    material = await asyncio.to_thread(make_local_tls)
    try:
        yield material
    finally:
        material.cleanup()


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


async def test_the_token_from_the_file_is_sent_as_a_bearer_header(tmp_path: Path) -> None:
    async with guarded_prometheus() as (url, seen), aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, tick=0, bearer_token=read_bearer_token(token_file(tmp_path)))
        result = await client.query("up")
        await client.aclose()
    assert [s.value for s in result.samples] == [0.02]
    assert seen == [f"Bearer {TOKEN}"], "the trailing newline of a mounted Secret must not reach the header"


async def test_the_measurer_queries_an_https_prometheus_with_the_files_the_chart_mounts(
        tmp_path: Path, tls: TlsMaterial) -> None:
    settings = run_settings(rules=str(tmp_path), kubeconfig=None, namespaces=(), dry_run=False, http_listen=None,
                            log=LogSettings(), env={"ROLLGUARD_PROMETHEUS_TOKEN_FILE": str(token_file(tmp_path)),
                                                   "ROLLGUARD_PROMETHEUS_CA_FILE": str(tls.ca_file)})
    assert (settings.prometheus_token_file, settings.prometheus_ca_file) == (tmp_path / "token", tls.ca_file)
    (tmp_path / "prom.yaml").write_text(POLICY)
    policy = load_file(tmp_path / "prom.yaml").policies[0]
    ctx = SignalContext("staging", "backend", 2, "5d8f7c9b4", "backend-5d8f7c9b4-", {}, 0.0)
    rollout = Rollout(RolloutId("staging", "backend", 2, "5d8f7c9b4"), policy, ctx, None, 0.0)
    async with guarded_prometheus(tls=tls.server_context()) as (url, seen), aiohttp.ClientSession() as session:
        measurer = ProviderMeasurer(prometheus_url=url, kube=None, session=session, proxy=None, clock=FakeClock(),
                                    prometheus_token_file=settings.prometheus_token_file,
                                    prometheus_ca_file=settings.prometheus_ca_file)
        measured = await measurer.measure(rollout)
        await measurer.close()
    assert (measured["error_rate"].phase, measured["error_rate"].value) == (Phase.OK, 0.02), measured
    assert seen == [f"Bearer {TOKEN}"]


async def test_without_the_ca_the_https_prometheus_is_an_error_not_a_verdict(tls: TlsMaterial) -> None:
    async with guarded_prometheus(tls=tls.server_context()) as (url, seen), aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, tick=0, bearer_token=TOKEN)
        with pytest.raises(Exception, match="certificate verify failed") as failed:
            await client.query("up")
        await client.aclose()
    assert type(failed.value).__name__ == "PrometheusUnavailable"
    assert TOKEN not in str(failed.value)
    assert seen == [], "nothing may be sent to a server whose certificate was not verified"


async def test_the_token_is_scrubbed_from_anything_logged_once_the_client_has_it(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        PrometheusClient("http://127.0.0.1:9", session, bearer_token=read_bearer_token(token_file(tmp_path)))
    assert SCRUBBER.scrub(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer [REDACTED]"


@pytest.mark.parametrize(("content", "message"), [
    (None, "ROLLGUARD_PROMETHEUS_TOKEN_FILE: cannot read {path}: No such file or directory"),
    ("  \n", "ROLLGUARD_PROMETHEUS_TOKEN_FILE: {path} is empty"),
    (TOKEN + "\nsecond-line\n", "ROLLGUARD_PROMETHEUS_TOKEN_FILE: {path} holds more than one line; the token is "
                                "one line"),
])
def test_an_unusable_token_file_stops_the_start_naming_the_variable_not_the_token(
        tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as refused:
        read_bearer_token(path)
    assert str(refused.value) == message.format(path=path)
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize(("content", "message"), [
    (None, "ROLLGUARD_PROMETHEUS_CA_FILE: cannot read {path}: No such file or directory"),
    ("not a certificate\n", "ROLLGUARD_PROMETHEUS_CA_FILE: {path} holds no PEM CA certificate"),
])
def test_an_unusable_ca_file_stops_the_start_naming_the_variable(tmp_path: Path, content: str | None,
                                                                   message: str) -> None:
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as refused:
        ca_ssl_context(path)
    assert str(refused.value) == message.format(path=path)


async def test_a_url_with_user_info_and_a_token_is_refused() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SettingsError, match="carries user-info and a bearer token is set as well: use one"):
            PrometheusClient("http://ops:hunter2@127.0.0.1:9", session, bearer_token=TOKEN)
