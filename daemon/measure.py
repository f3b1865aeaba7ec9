"""The `Measurer` of the analyses: the signal providers of each policy behind one seam.

Providers are built once per policy (policies are immutable; a reload makes new ones) and share
the daemon's pooled HTTP session and one Prometheus client, whose coalescer sends identical
queries of the same tick once however many analyses ask. Every measurement is bounded by a
timeout; a provider that overruns it or cannot be built yields an ERROR measurement, which the
rules treat as "could not tell" — never as "the rollout is bad".
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from daemon.alertmanager import AlertHub, AlertmanagerClient
from daemon.clock import Clock
from daemon.kube.client import KubeClient
from daemon.rollout import Rollout
from daemon.rules.model import AlertsSignal, PrometheusSignal, RollbackPolicy, RuleError
from daemon.signals.base import Measurement, Phase, SignalProvider
from daemon.signals.factory import build_providers
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider, ca_ssl_context, read_bearer_token

log = structlog.get_logger("rollguard.measure")


async def measure_safely(name: str, coro: Coroutine[Any, Any, Measurement], *, timeout: float) -> Measurement:
    """One provider's reading, bounded in time; whatever it raises is that signal's ERROR, never the
    end of the analysis (a workload's answer can be hostile by definition)."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        return Measurement(Phase.ERROR, None, f"{name}: no answer within {timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure of one signal is that signal's error
        log.warning("signal measurement failed", signal=name, error_type=type(exc).__name__)
        return Measurement(Phase.ERROR, None, f"{name}: the measurement failed ({type(exc).__name__}: "
                                              f"{str(exc)[:200]})")


def can_run(policy: RollbackPolicy, *, prometheus_url: str | None,
            alertmanager_url: str | None = None) -> RuleError | None:
    """Whether this daemon has every provider the policy's signals need; the error names what to set."""
    for spec in policy.signals.values():
        if isinstance(spec.provider, AlertsSignal) and not alertmanager_url:
            return RuleError(spec.source.file, spec.source.line, f"spec.signals.{spec.name}.alerts",
                             "this daemon has no Alertmanager to ask: set ROLLGUARD_ALERTMANAGER_URL (chart value "
                             "alertmanager.url), or remove the signal")
        if isinstance(spec.provider, PrometheusSignal) and not prometheus_url:
            return RuleError(spec.source.file, spec.source.line, f"spec.signals.{spec.name}.prometheus",
                             "this daemon has no Prometheus to query: set --prometheus-url (environment "
                             "ROLLGUARD_PROMETHEUS_URL, chart value prometheus.url), or remove the signal")
    return None


class ProviderMeasurer:
    """Measures rollouts with the providers their policy names."""

    def __init__(self, *, prometheus_url: str | None, kube: KubeClient | None, session: aiohttp.ClientSession,
                 proxy: str | None, clock: Clock, timeout: float = 30.0,
                 prometheus_token_file: Path | None = None, prometheus_ca_file: Path | None = None,
                 alertmanager_url: str | None = None) -> None:
        """`prometheus_token_file` / `prometheus_ca_file`: read here, once; an unusable one raises
        PrometheusConfigError naming its variable (the daemon then refuses to start). `alertmanager_url`:
        where `alerts` signals pull from; `alert_hub` receives the webhook's pushes either way."""
        self._prometheus = PrometheusClient(
            prometheus_url, session,
            bearer_token=read_bearer_token(prometheus_token_file) if prometheus_token_file else None,
            ssl_context=ca_ssl_context(prometheus_ca_file) if prometheus_ca_file else None,
        ) if prometheus_url else None
        self.alert_hub = AlertHub(clock)
        """Alerts pushed by Alertmanager's webhook (`POST /api/v1/alerts/alertmanager`)."""
        self._alerts = (self.alert_hub, AlertmanagerClient(alertmanager_url, session, clock=clock)) \
            if alertmanager_url else None
        self._kube = kube
        self._session = session
        self._proxy = proxy
        self._clock = clock
        self._timeout = timeout
        self._providers: dict[int, tuple[RollbackPolicy, dict[str, SignalProvider | str]]] = {}

    def _for(self, policy: RollbackPolicy) -> dict[str, SignalProvider | str]:
        """The providers of each signal, built per signal: one that cannot be built (for example a
        Prometheus signal with no Prometheus configured) errors alone and never blanks the others."""
        cached = self._providers.get(id(policy))
        if cached is not None and cached[0] is policy:
            return cached[1]
        built: dict[str, SignalProvider | str] = {}
        for name, spec in policy.signals.items():
            try:
                built[name] = build_providers({name: spec}, prometheus=self._prometheus, kube=self._kube,
                                              session=self._session, proxy=self._proxy, alerts=self._alerts,
                                              clock=self._clock)[name]
            except ValueError as exc:
                log.error("cannot measure a signal of a policy", policy=policy.name, signal=name, error=str(exc))
                built[name] = str(exc)
        if len(self._providers) > 1000:
            self._providers.clear()
        self._providers[id(policy)] = (policy, built)
        return built

    def wakeup(self, rollout: Rollout) -> asyncio.Event | None:
        """An event set when a pushed alert counts for one of the rollout's `alerts` signals; None when
        the policy has none (nothing pushed can change its verdict)."""
        signals = [s.provider for s in rollout.policy.signals.values() if isinstance(s.provider, AlertsSignal)]
        return self.alert_hub.subscribe(rollout.ctx, signals) if signals else None

    async def _bounded(self, name: str, coro: Coroutine[Any, Any, Measurement]) -> Measurement:
        return await measure_safely(name, coro, timeout=self._timeout)

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        providers = self._for(rollout.policy)
        names = list(providers)
        results = await asyncio.gather(*(self._measure_one(n, providers[n], rollout) for n in names))
        return dict(zip(names, results, strict=True))

    async def _measure_one(self, name: str, provider: SignalProvider | str, rollout: Rollout) -> Measurement:
        if isinstance(provider, str):
            return Measurement(Phase.ERROR, None, provider)
        return await self._bounded(name, provider.measure(rollout.ctx))

    async def measure_baselines(self, rollout: Rollout) -> dict[str, Measurement]:
        if rollout.baseline_ctx is None:
            return {}
        providers = self._for(rollout.policy)
        wanted = {name: p for name, p in providers.items()
                  if rollout.policy.signals[name].has_baseline and isinstance(p, PrometheusProvider)}
        names = list(wanted)
        results = await asyncio.gather(*(
            self._bounded(n, wanted[n].measure_at(rollout.baseline_ctx, rollout.started_at)) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        if self._prometheus is not None:
            await self._prometheus.aclose()
