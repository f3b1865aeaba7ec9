"""Builds the signal providers of a policy, refusing at load time what cannot be measured.

`build_providers` maps each `SignalSpec` to its provider by the kind of its definition and refuses,
with one `ProviderConfigError` naming every offending signal (file, line, what to configure):

* a `prometheus:` signal when the daemon has no Prometheus URL,
* a `logs:` signal when it has no Kubernetes client,
* an `http:` / `websocket:` signal when it has no HTTP session,
* an `alerts:` signal when it has no Alertmanager,
* a definition of a kind no provider handles (never a silent fallback).

`ProviderKind` names the kind for metrics labels and logs (`prometheus`, `logs`, `http`, `websocket`, `alerts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

import aiohttp

from daemon.alertmanager import AlertHub, AlertmanagerClient
from daemon.clock import Clock, SystemClock
from daemon.kube.client import KubeClient
from daemon.rules.model import (
    AlertsSignal,
    HttpSignal,
    LogsSignal,
    PrometheusSignal,
    Provider,
    SignalSpec,
    WebSocketSignal,
)
from daemon.signals.alerts import AlertsProvider
from daemon.signals.base import Measurement, SignalContext, SignalProvider
from daemon.signals.http import HttpProvider
from daemon.signals.logs import LogsProvider
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider
from daemon.signals.websocket import WebSocketProvider

__all__ = ["BaselineProvider", "ProviderConfigError", "ProviderKind", "build_providers"]


class ProviderKind(StrEnum):
    """The kind of a signal's provider, as a metrics label value."""

    PROMETHEUS = "prometheus"
    LOGS = "logs"
    HTTP = "http"
    WEBSOCKET = "websocket"
    ALERTS = "alerts"

    @classmethod
    def of(cls, definition: SignalSpec | Provider) -> ProviderKind:
        """The kind of a signal (or of its provider definition); ValueError for a definition of no known kind."""
        provider = definition.provider if isinstance(definition, SignalSpec) else definition
        kind = _KINDS.get(type(provider))
        if kind is None:
            raise ValueError(f"no signal provider for {type(provider).__name__}")
        return kind


_KINDS: dict[type, ProviderKind] = {
    PrometheusSignal: ProviderKind.PROMETHEUS,
    LogsSignal: ProviderKind.LOGS,
    HttpSignal: ProviderKind.HTTP,
    WebSocketSignal: ProviderKind.WEBSOCKET,
    AlertsSignal: ProviderKind.ALERTS,
}


class BaselineProvider(SignalProvider, Protocol):
    """A provider that can also measure at a past moment (for `baseline: previous`); `PrometheusProvider` is one."""

    async def measure_at(self, ctx: SignalContext, at: float) -> Measurement:
        """Take the reading for `ctx`'s revision as of `at` (epoch seconds)."""
        ...


class ProviderConfigError(ValueError):
    """Signals that cannot be measured with the daemon's configuration; one line per signal in the message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)
        """One `file:line: signals.NAME: what is missing` per signal."""


def build_providers(policy_signals: Mapping[str, SignalSpec], *, prometheus: PrometheusClient | None,
                    kube: KubeClient | None, session: aiohttp.ClientSession | None,
                    proxy: str | None = None,
                    alerts: tuple[AlertHub, AlertmanagerClient] | None = None,
                    clock: Clock | None = None) -> dict[str, SignalProvider]:
    """A provider per signal, keyed by signal name; ProviderConfigError listing every signal that cannot be built.

    `prometheus` is None when no Prometheus URL is configured; `session` serves HTTP and WebSocket
    checks (and should be the one `prometheus` uses: one pool); `proxy` is the in-cluster proxy for
    check URLs, None to connect directly; `alerts` the webhook's hub and the Alertmanager client, None
    when no Alertmanager is configured; `clock` tells alerts signals what time it is (default: the system's).
    """
    providers: dict[str, SignalProvider] = {}
    problems: list[str] = []
    for name, spec in policy_signals.items():
        where = f"{spec.source}: signals.{name}"
        # `object`, not the model's union: a kind added to the model but not here must be refused at run time.
        definition: object = spec.provider
        if isinstance(definition, PrometheusSignal):
            if prometheus is None:
                problems.append(f"{where}: a prometheus signal needs a Prometheus server, and none is configured "
                                "(give the daemon a Prometheus URL, or remove the signal)")
                continue
            providers[name] = PrometheusProvider(definition, client=prometheus)
        elif isinstance(definition, LogsSignal):
            if kube is None:
                problems.append(f"{where}: a logs signal needs the Kubernetes API, and no client is configured")
                continue
            providers[name] = LogsProvider(definition, kube=kube)
        elif isinstance(definition, HttpSignal | WebSocketSignal):
            if session is None:
                kind = "an http" if isinstance(definition, HttpSignal) else "a websocket"
                problems.append(f"{where}: {kind} signal needs an HTTP session, and none is configured")
                continue
            if isinstance(definition, HttpSignal):
                providers[name] = HttpProvider(definition, session=session, proxy=proxy)
            else:
                providers[name] = WebSocketProvider(definition, session=session, proxy=proxy)
        elif isinstance(definition, AlertsSignal):
            if alerts is None:
                problems.append(f"{where}: an alerts signal needs an Alertmanager, and none is configured "
                                "(give the daemon an Alertmanager URL, or remove the signal)")
                continue
            providers[name] = AlertsProvider(definition, hub=alerts[0], client=alerts[1],
                                             clock=clock or SystemClock())
        else:
            problems.append(f"{where}: no signal provider for {type(definition).__name__}")
    if problems:
        raise ProviderConfigError(problems)
    return providers
