"""The `Measurer` of the analyses: the signal providers of each policy behind one seam.

Providers are built once per policy (policies are immutable; a reload makes new ones) and share
the daemon's pooled HTTP session and one Prometheus client, whose coalescer sends identical
queries of the same tick once however many analyses ask. Every measurement is bounded by a
timeout; a provider that overruns it or cannot be built yields an ERROR measurement, which the
rules treat as "could not tell" — never as "the rollout is bad".
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.alertmanager import AlertHub, AlertmanagerClient
from daemon.baselines import NO_EARLIER, StableBaseline, choose_stable
from daemon.clock import Clock
from daemon.compare_measure import Side, measure_comparison
from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.rollout_state import POD_TEMPLATE_HASH, owned_replica_sets
from daemon.kube.state import StateError, read_state, remembered_history
from daemon.measurement import NO_BASELINE
from daemon.rollout import Rollout
from daemon.rules.model import AlertsSignal, BaselineMode, ComparisonSpec, PrometheusSignal, RollbackPolicy, RuleError
from daemon.signals.base import Measurement, Phase, SignalProvider
from daemon.signals.batching import QueryBatcher, QueryBudget
from daemon.signals.factory import build_providers
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider, ca_ssl_context, read_bearer_token

log = structlog.get_logger("rollguard.measure")


class _QueryMetrics(Collector):
    """The Prometheus client's request counts, read at scrape time."""

    def __init__(self, measurer: ProviderMeasurer) -> None:
        self._measurer = measurer

    def collect(self) -> Iterator[Metric]:
        sent = CounterMetricFamily("rollguard_prometheus_requests", "Requests sent to Prometheus (after "
                                   "coalescing and batching).")
        sent.add_metric([], self._measurer.prometheus_requests)
        saved = CounterMetricFamily("rollguard_prometheus_queries_saved", "Queries answered by a batched request "
                                    "beyond its one request (each would have been a request of its own).")
        batcher = self._measurer.batcher
        saved.add_metric([], batcher.queries_saved if batcher is not None else 0)
        yield sent
        yield saved


def register_query_metrics(registry: CollectorRegistry, measurer: ProviderMeasurer) -> None:
    """Expose `measurer`'s Prometheus request counts in `registry` (the daemon's `/metrics`)."""
    registry.register(_QueryMetrics(measurer))


async def measure_safely(name: str, coro: Coroutine[Any, Any, Measurement], *, timeout: float) -> Measurement:
    """One provider's reading, bounded in time; whatever it raises is that signal's ERROR, never the
    end of the analysis (a workload's answer can be hostile by definition)."""
    try:
        # `asyncio.timeout` bounds the reading in the caller's task; `wait_for` would start a task per
        # reading, which at thousands of readings a second is a good part of a tick's cost.
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        return Measurement(Phase.ERROR, None, f"{name}: no answer within {timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure of one signal is that signal's error
        log.warning("signal measurement failed", signal=name, error_type=type(exc).__name__)
        return Measurement(Phase.ERROR, None, f"{name}: the measurement failed ({type(exc).__name__}: "
                                              f"{str(exc)[:200]})")


def tick_phase(rollout: Rollout) -> float:
    """A deterministic phase (whole seconds, 0 ≤ phase < interval) for the first tick of `rollout`.

    A hash of namespace/name/revision: simultaneous rollouts (a cluster-wide image bump) are spread
    evenly over the interval instead of all ticking in the same second, and a restarted daemon picks
    the same phase. Whole seconds, so that the rollouts sharing a second share the Prometheus
    client's coalescing tick and their queries can be batched."""
    slots = max(1, int(rollout.policy.analysis.interval))
    key = f"{rollout.id.namespace}/{rollout.id.name}/{rollout.id.revision}".encode()
    return float(int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % slots)


@dataclass(frozen=True)
class PrometheusTuning:
    """How the Prometheus queries of all analyses are sent (see `daemon.signals.batching`)."""

    batch: bool = True
    """Send same-shape queries of one tick as one request."""
    max_batch: int = 500
    """Queries at most in one batched request (500 rendered queries: a POST of ~100 kB)."""
    linger: float = 0.05
    """Seconds a batch waits for more queries after its first."""
    max_queries_per_second: float = 0.0
    """Requests per second at most (fair across query shapes); 0: no limit."""


def _mode(policy: RollbackPolicy, name: str) -> BaselineMode | None:
    provider = policy.signals[name].provider
    return provider.baseline if isinstance(provider, PrometheusSignal) else None


def _with_revision(measured: Measurement, revision: int, reason: str) -> Measurement:
    """The baseline measurement, saying which revision it is of (`details["revision"]`, the message)."""
    return replace(measured, message=f"{reason}: {measured.message}",
                   details={**measured.details, "revision": float(revision)})


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
                 alertmanager_url: str | None = None, tuning: PrometheusTuning | None = None,
                 spread_first_tick: bool = False) -> None:
        """`prometheus_token_file` / `prometheus_ca_file`: read here, once; an unusable one raises
        PrometheusConfigError naming its variable (the daemon then refuses to start). `alertmanager_url`:
        where `alerts` signals pull from; `alert_hub` receives the webhook's pushes either way.
        `spread_first_tick`: move each analysis' first tick to a whole second plus `tick_phase` (see
        `first_tick`)."""
        tuning = tuning or PrometheusTuning()
        budget = QueryBudget(tuning.max_queries_per_second) if tuning.max_queries_per_second > 0 else None
        batcher = partial(QueryBatcher, linger=tuning.linger, max_batch=tuning.max_batch if tuning.batch else 1,
                          budget=budget)
        self._prometheus = PrometheusClient(
            prometheus_url, session,
            bearer_token=read_bearer_token(prometheus_token_file) if prometheus_token_file else None,
            ssl_context=ca_ssl_context(prometheus_ca_file) if prometheus_ca_file else None,
            batcher=batcher,
        ) if prometheus_url else None
        self.alert_hub = AlertHub(clock)
        """Alerts pushed by Alertmanager's webhook (`POST /api/v1/alerts/alertmanager`)."""
        self._alerts = (self.alert_hub, AlertmanagerClient(alertmanager_url, session, clock=clock)) \
            if alertmanager_url else None
        self._spread = spread_first_tick
        self._kube = kube
        self._session = session
        self._proxy = proxy
        self._clock = clock
        self._timeout = timeout
        self._providers: dict[int, tuple[RollbackPolicy, dict[str, SignalProvider | str]]] = {}
        self._stables: dict[tuple[str, str, int], StableBaseline] = {}

    @property
    def batcher(self) -> QueryBatcher | None:
        """The Prometheus query batcher (for its `queries_saved`), None without Prometheus."""
        batcher = self._prometheus.batcher if self._prometheus is not None else None
        return batcher if isinstance(batcher, QueryBatcher) else None

    @property
    def prometheus_requests(self) -> int:
        """Requests sent to Prometheus so far."""
        return self._prometheus.requests_sent if self._prometheus is not None else 0

    def first_tick(self, rollout: Rollout, planned: float) -> float:
        """`planned` (epoch s), or when spreading: the next whole second plus `tick_phase(rollout)`."""
        return math.ceil(planned) + tick_phase(rollout) if self._spread else planned

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
        measured = dict(zip(names, results, strict=True))
        if rollout.policy.comparisons:
            measured.update(await self._compare(rollout))
        return measured

    async def _compare(self, rollout: Rollout) -> dict[str, Measurement]:
        """Every comparison of the policy, keyed by its name (never a signal's name: the loader sees to it)."""
        specs = list(rollout.policy.comparisons.values())
        stable: StableBaseline | str | None = None
        if any(spec.baseline is BaselineMode.STABLE for spec in specs):
            stable = await self._stable_cached(rollout)
        results = await asyncio.gather(*(self._bounded(spec.name, self._compare_one(rollout, spec, stable))
                                         for spec in specs))
        return {spec.name: result for spec, result in zip(specs, results, strict=True)}

    async def _compare_one(self, rollout: Rollout, spec: ComparisonSpec,
                           stable: StableBaseline | str | None) -> Measurement:
        if self._prometheus is None:
            return Measurement(Phase.ERROR, None, f"{spec.name}: this daemon has no Prometheus to query")
        query = rollout.policy.signals[spec.signal].provider
        assert isinstance(query, PrometheusSignal)  # the loader allows only prometheus signals
        now = self._clock.now()
        new = Side(rollout.ctx, rollout.started_at, now, f"revision {rollout.ctx.revision}")
        if spec.baseline is BaselineMode.CONCURRENT:
            if rollout.baseline_ctx is None:
                return Measurement(Phase.INCONCLUSIVE, None, f"{spec.name}: no earlier revision to compare with")
            old = rollout.baseline_ctx
            baseline = Side(old, rollout.started_at, now, f"revision {old.revision} over the same window")
        elif isinstance(stable, StableBaseline):
            length = now - rollout.started_at
            baseline = Side(stable.ctx, stable.at - length, stable.at, stable.reason)
        else:
            return Measurement(Phase.INCONCLUSIVE, None, f"{spec.name}: baseline: stable: {stable}")
        return await measure_comparison(spec, query.query, client=self._prometheus, new=new, baseline=baseline)

    async def _stable_cached(self, rollout: Rollout) -> StableBaseline | str:
        """`_stable`, found once per rollout (it cannot change while the rollout runs); failures are retried."""
        key = (*rollout.key, rollout.ctx.revision)
        found = self._stables.get(key)
        if found is None:
            chosen = await self._stable(rollout)
            if isinstance(chosen, str):
                return chosen
            if len(self._stables) > 1000:
                self._stables.clear()
            found = self._stables[key] = chosen
        return found

    async def _measure_one(self, name: str, provider: SignalProvider | str, rollout: Rollout) -> Measurement:
        if isinstance(provider, str):
            return Measurement(Phase.ERROR, None, provider)
        return await self._bounded(name, provider.measure(rollout.ctx))

    async def measure_baselines(self, rollout: Rollout) -> dict[str, Measurement]:
        providers = self._for(rollout.policy)
        # A stable baseline is found from rollguard's verdicts, not from the previous ReplicaSet, so it is
        # measured even when that one is unknown (a re-used ReplicaSet whose revision the cache has not
        # caught up with yet); `previous` needs it.
        wanted = {name: p for name, p in providers.items()
                  if rollout.policy.signals[name].has_baseline and isinstance(p, PrometheusProvider)
                  and (rollout.baseline_ctx is not None or _mode(rollout.policy, name) is not BaselineMode.PREVIOUS)}
        stable: StableBaseline | str | None = None
        if any(_mode(rollout.policy, name) in (BaselineMode.STABLE, BaselineMode.CONCURRENT) for name in wanted):
            stable = await self._stable(rollout)

        async def one(name: str, provider: PrometheusProvider) -> Measurement:
            # A concurrent baseline's starting point is its fallback, the stable one (`measure_concurrent`).
            if _mode(rollout.policy, name) not in (BaselineMode.STABLE, BaselineMode.CONCURRENT):
                assert rollout.baseline_ctx is not None
                measured = await provider.measure_at(rollout.baseline_ctx, rollout.started_at)
                revision = rollout.baseline_ctx.revision
                return _with_revision(measured, revision, f"revision {revision}, the previous one")
            if stable is None or isinstance(stable, str):
                return Measurement(Phase.INCONCLUSIVE, None, f"baseline: stable: {stable}",
                                   details={NO_BASELINE: 1.0} if stable == NO_EARLIER else {})
            return _with_revision(await provider.measure_at(stable.ctx, stable.at), stable.ctx.revision, stable.reason)

        names = list(wanted)
        results = await asyncio.gather(*(self._bounded(n, one(n, wanted[n])) for n in names))
        return dict(zip(names, results, strict=True))

    async def measure_concurrent(self, rollout: Rollout,
                                 baselines: Mapping[str, Measurement]) -> dict[str, Measurement]:
        """`baselines` with each `baseline: concurrent` signal measured now on the previous revision's pods,
        while any of them is ready; once none is (the rollout completed), its stable fallback from
        `baselines`, saying so. Both sides then see the same traffic at the same instant (the client
        rounds "now" to the same tick for both queries)."""
        concurrent = {name: p for name, p in self._for(rollout.policy).items()
                      if _mode(rollout.policy, name) is BaselineMode.CONCURRENT and isinstance(p, PrometheusProvider)}
        old = rollout.baseline_ctx
        if not concurrent or old is None:
            return dict(baselines)
        serving = await self._ready_pods(rollout.key[0], old.pod_template_hash)
        result = dict(baselines)
        if isinstance(serving, int) and serving > 0:
            names = list(concurrent)
            measured = await asyncio.gather(*(self._bounded(n, concurrent[n].measure(old)) for n in names))
            for name, live in zip(names, measured, strict=True):
                result[name] = _with_revision(live, old.revision, f"revision {old.revision}, its {serving} ready "
                                                                  "pods measured at the same time")
            return result
        why = serving if isinstance(serving, str) else (
            f"no pod of revision {old.revision} is ready any more (rollout complete)")
        for name in concurrent:
            fallback = baselines.get(name) or Measurement(Phase.INCONCLUSIVE, None, "no stable baseline measured")
            result[name] = replace(fallback, message=f"{why}; stable baseline instead: {fallback.message}")
        return result

    async def _ready_pods(self, namespace: str, pod_template_hash: str) -> int | str:
        """How many pods of the ReplicaSet with this hash are ready, or why that is unknown."""
        if self._kube is None:
            return "this daemon has no Kubernetes client to see the previous revision's pods"
        try:
            listed = await self._kube.list(api_path("apps/v1", "replicasets", namespace),
                                           {"labelSelector": f"{POD_TEMPLATE_HASH}={pod_template_hash}"})
        except KubeError as exc:
            return f"cannot read the previous revision's ReplicaSet: {exc}"
        return sum(int(((rs.get("status") or {}).get("readyReplicas")) or 0) for rs in listed.get("items") or [])

    async def _stable(self, rollout: Rollout) -> StableBaseline | str:
        """The stable baseline's revision, from the Deployment's ReplicaSets and rollguard's verdicts on them."""
        if self._kube is None:
            return "this daemon has no Kubernetes client to find the stable revision with"
        namespace, name = rollout.key
        try:
            deployment = await self._kube.get(api_path("apps/v1", "deployments", namespace, name))
            listed = await self._kube.list(api_path("apps/v1", "replicasets", namespace))
        except KubeError as exc:
            return f"cannot read the ReplicaSets of {namespace}/{name}: {exc}"
        replica_sets = owned_replica_sets(deployment, list(listed.get("items") or []))
        now = self._clock.now()
        try:
            state = read_state(deployment, now=now)
        except StateError:
            state = read_state({}, now=now)  # an unreadable annotation: the ReplicaSets' copies still tell
        memory = state.merged_memory(remembered_history(replica_sets, now=now))
        timing = rollout.policy.analysis
        return choose_stable(rollout.ctx, replica_sets, memory.passed_revisions(), started_at=rollout.started_at,
                             min_age=timing.stable_min_age)

    async def close(self) -> None:
        if self._prometheus is not None:
            await self._prometheus.aclose()
