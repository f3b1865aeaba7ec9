"""The provider factory: one provider per signal kind, and a clear refusal of what cannot be measured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client

from daemon.clock import FakeClock
from daemon.kube.client import KubeClient
from daemon.rules.model import (
    HttpSignal,
    LogsSignal,
    PrometheusSignal,
    SignalSpec,
    Source,
    WebSocketSignal,
)
from daemon.signals.base import Phase, SignalContext
from daemon.signals.factory import ProviderConfigError, ProviderKind, build_providers
from daemon.signals.http import HttpProvider
from daemon.signals.logs import LogsProvider
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider
from daemon.signals.session import new_session
from daemon.signals.websocket import WebSocketProvider
from sim.services import WorkloadServer
from sim.store import Store
from tests.promkit import make_pod, make_service

SIGNALS = {
    "error_rate": SignalSpec("error_rate", PrometheusSignal('up{namespace="{{namespace}}"}'),
                             Source("rules/backend.yaml", 14)),
    "log_errors": SignalSpec("log_errors", LogsSignal("ERROR"), Source("rules/backend.yaml", 18)),
    "health": SignalSpec("health", HttpSignal("http://backend.{{namespace}}:8000/health"),
                         Source("rules/backend.yaml", 20)),
    "ws": SignalSpec("ws", WebSocketSignal("ws://backend.{{namespace}}:8000/ws", send="PING", expect="PONG"),
                     Source("rules/backend.yaml", 22)),
}
CTX = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="5d8f7c9b4",
                    pod_prefix="backend-5d8f7c9b4-", labels={"app": "backend"}, rollout_started_at=0.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as shared:
        yield shared


@pytest.fixture
async def kube() -> AsyncIterator[KubeClient]:
    # Never contacted here: building a provider makes no request.
    client = KubeClient(k8s_client.ApiClient(configuration=k8s_client.Configuration(host="http://127.0.0.1:9")))
    try:
        yield client
    finally:
        await client.close()


async def test_one_provider_per_signal_kind(session: aiohttp.ClientSession, kube: KubeClient) -> None:
    prometheus = PrometheusClient("http://127.0.0.1:9", session)
    providers = build_providers(SIGNALS, prometheus=prometheus, kube=kube, session=session, proxy=None)
    assert {name: type(p) for name, p in providers.items()} == {
        "error_rate": PrometheusProvider, "log_errors": LogsProvider, "health": HttpProvider, "ws": WebSocketProvider}
    assert list(providers) == list(SIGNALS), "in the policy's order"


async def test_missing_dependencies_are_refused_naming_each_signal(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderConfigError) as refused:
        build_providers(SIGNALS, prometheus=None, kube=None, session=None)
    assert refused.value.problems == (
        "rules/backend.yaml:14: signals.error_rate: a prometheus signal needs a Prometheus server, and none is "
        "configured (give the daemon a Prometheus URL, or remove the signal)",
        "rules/backend.yaml:18: signals.log_errors: a logs signal needs the Kubernetes API, and no client is "
        "configured",
        "rules/backend.yaml:20: signals.health: an http signal needs an HTTP session, and none is configured",
        "rules/backend.yaml:22: signals.ws: a websocket signal needs an HTTP session, and none is configured",
    )
    assert str(refused.value) == "\n".join(refused.value.problems)

    checks_only = {name: spec for name, spec in SIGNALS.items() if name in ("health", "ws")}
    assert set(build_providers(checks_only, prometheus=None, kube=None, session=session)) == {"health", "ws"}


@dataclass(frozen=True)
class GraphiteSignal:
    query: str


def test_an_unknown_kind_is_refused_not_defaulted() -> None:
    spec = SignalSpec("legacy", GraphiteSignal("x"), Source("rules/old.yaml", 3))  # type: ignore[arg-type]
    with pytest.raises(ProviderConfigError, match=r"^rules/old.yaml:3: signals.legacy: no signal provider for "
                                                  r"GraphiteSignal$"):
        build_providers({"legacy": spec}, prometheus=None, kube=None, session=None)
    with pytest.raises(ValueError, match="no signal provider for GraphiteSignal"):
        ProviderKind.of(spec)


def test_kinds_are_the_metrics_label_values() -> None:
    assert [str(ProviderKind.of(spec)) for spec in SIGNALS.values()] == ["prometheus", "logs", "http", "websocket"]
    for spec in SIGNALS.values():
        # `daemon.analysis` labels its provider-error metric with the definition's class name; keep them one.
        assert ProviderKind.of(spec.provider) == type(spec.provider).__name__.removesuffix("Signal").lower()


async def test_built_checks_go_through_the_proxy(session: aiohttp.ClientSession) -> None:
    store = Store(FakeClock(start=1_764_151_200.0))
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa", env={"SIM_LATENCY_MS": "1"})
    checks_only = {name: spec for name, spec in SIGNALS.items() if name in ("health", "ws")}
    async with WorkloadServer(store, store.clock) as server:
        providers = build_providers(checks_only, prometheus=None, kube=None, session=session, proxy=server.url)
        readings = {name: await provider.measure(CTX) for name, provider in providers.items()}
    assert {name: (m.phase, m.value) for name, m in readings.items()} == {
        "health": (Phase.OK, True), "ws": (Phase.OK, True)}, readings
