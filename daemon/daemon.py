"""`rollguard run`: the daemon, assembled from its parts and run as a few guarded root tasks.

Root tasks: `supervisor` (informers, reconcile, analyses), `rules` (hot reload), `notifier`
(the pipeline's lanes run inside it), `http` (health, readiness, metrics, analyses) and, with
leader election, `leader`. If any of them ends, the rest are stopped within a grace period and
the process exits non-zero so Kubernetes restarts it (`daemon.aio.run_guarded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from daemon import gcpolicy
from daemon.actions import Actions, ActionSettings, RollbackRegistry
from daemon.aio import run_guarded
from daemon.alertmanager_http import WEBHOOK_PATH, webhook_handler, webhook_token_from_env
from daemon.clock import Clock, SystemClock
from daemon.http import HttpServer, api_token_from_env, build_http_app
from daemon.kube.client import KubeClient
from daemon.kube.events import EventRecorder
from daemon.kube.leader import LeaderElector, LeaseConfig
from daemon.kube.secrets import KubeSecretSource
from daemon.measure import PrometheusTuning, ProviderMeasurer, can_run, register_query_metrics
from daemon.metrics import Metrics
from daemon.notify import NotificationPipeline, build_notifiers
from daemon.notify.configfile import load_notify_config
from daemon.notify.delivery import PrometheusMetrics
from daemon.notify.routing import NotifyRouter
from daemon.reconcile import Reconciler
from daemon.redaction import SCRUBBER
from daemon.rules.model import RollbackPolicy
from daemon.rulesets import RuleSet
from daemon.settings import RunSettings
from daemon.supervisor import Supervisor
from daemon.threads import AnnotationThreadStore
from daemon.writer import ClusterWriter

log = structlog.get_logger("rollguard.daemon")


@dataclass(frozen=True)
class Extras:
    """Wiring that only the demo and tests need (never set in a cluster)."""

    prometheus_url: str | None = None
    notify_config: Mapping[str, Any] | None = None
    pagerduty_ssl: ssl.SSLContext | None = None
    clock: Clock | None = None


def notify_config_from(path: Path | None, policies: Sequence[RollbackPolicy],
                       env: Mapping[str, str]) -> dict[str, Any]:
    """The notifier configuration: the `--notify-config` file `path`, else what the environment provides.

    Without a file: console always; Slack when a token or webhook is set (channel from
    ROLLGUARD_SLACK_CHANNEL, else the first policy's `notify.slack.channel`); PagerDuty when a
    routing key is set.
    """
    if path is not None:
        return load_notify_config(path)
    config: dict[str, Any] = {"console": {}}
    has = {name: bool(env.get(name) or env.get(name + "_FILE")) for name in (
        "ROLLGUARD_SLACK_TOKEN", "ROLLGUARD_SLACK_WEBHOOK_URL", "ROLLGUARD_PAGERDUTY_ROUTING_KEY")}
    if has["ROLLGUARD_SLACK_TOKEN"]:
        channel = env.get("ROLLGUARD_SLACK_CHANNEL") or next(
            (p.notify.slack.channel for p in policies if p.notify.slack is not None and p.notify.slack.channel), None)
        if channel is None:
            raise ValueError("ROLLGUARD_SLACK_TOKEN is set but no channel: set ROLLGUARD_SLACK_CHANNEL or a "
                             "policy's notify.slack.channel")
        config["slack"] = {"channel": channel}
    elif has["ROLLGUARD_SLACK_WEBHOOK_URL"]:
        config["slack"] = {}
    if has["ROLLGUARD_PAGERDUTY_ROUTING_KEY"]:
        config["pagerduty"] = {}
    return config


@contextlib.asynccontextmanager
async def _session(per_host: int = 20) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=max(200, per_host), limit_per_host=per_host, ttl_dns_cache=30)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        yield session


async def run_daemon(settings: RunSettings, *, stop: asyncio.Event | None = None, extras: Extras | None = None,
                     env: Mapping[str, str] | None = None) -> None:
    """Run until `stop` is set (or a root task dies: then `RootTaskFailed` propagates)."""
    extras = extras or Extras()
    env = os.environ if env is None else env
    clock = extras.clock or SystemClock()
    metrics = Metrics()
    api_token = api_token_from_env(env)
    prometheus_url = extras.prometheus_url or settings.prometheus_url
    kube = await KubeClient.connect(settings.kubeconfig)
    try:
        elector = None if not settings.leader_election else LeaderElector(
            kube, LeaseConfig(settings.lease_name, settings.lease_namespace, settings.identity,
                              lease_duration=settings.lease_duration, renew_deadline=settings.lease_duration * 2 / 3,
                              retry_period=settings.lease_duration / 7.5),
            clock=clock, on_change=lambda leading: metrics.is_leader.set(1 if leading else 0))
        metrics.is_leader.set(1 if elector is None else 0)
        events = EventRecorder(kube, clock=clock, dry_run=settings.dry_run, instance=settings.identity or None)
        writer = ClusterWriter(kube, events, dry_run=settings.dry_run,
                               lease=elector.holds_lease if elector is not None else None,
                               margin=settings.actions.write_margin)
        own_pod = _own_pod(env)
        rules = RuleSet(settings.rules_dir, metrics=metrics, clock=clock,
                        on_refused=lambda refused: _report_refused(writer, own_pod, refused),
                        can_run=lambda policy: can_run(policy, prometheus_url=prometheus_url,
                                                       alertmanager_url=settings.alertmanager_url))
        rules.load()
        await _run_wired(settings, extras=extras, env=env, clock=clock, metrics=metrics, kube=kube, writer=writer,
                         elector=elector, rules=rules, prometheus_url=prometheus_url, api_token=api_token, stop=stop)
    finally:
        await kube.close()
        log.info("rollguard stopped")


async def _run_wired(settings: RunSettings, *, extras: Extras, env: Mapping[str, str], clock: Clock,
                     metrics: Metrics, kube: KubeClient, writer: ClusterWriter, elector: LeaderElector | None,
                     rules: RuleSet, prometheus_url: str | None, api_token: str | None,
                     stop: asyncio.Event | None) -> None:
    notify_config = dict(extras.notify_config) if extras.notify_config is not None else notify_config_from(
        settings.notify_config, rules.policies, env)
    async with _session(settings.analysis.connections_per_host) as session:
        measurer = ProviderMeasurer(prometheus_url=prometheus_url, kube=kube, session=session,
                                    proxy=settings.service_proxy, clock=clock,
                                    timeout=settings.analysis.measure_timeout,
                                    prometheus_token_file=settings.prometheus_token_file,
                                    prometheus_ca_file=settings.prometheus_ca_file,
                                    alertmanager_url=settings.alertmanager_url,
                                    tuning=PrometheusTuning(batch=settings.analysis.prometheus_batch,
                                                            max_queries_per_second=settings.analysis.prometheus_max_qps),
                                    spread_first_tick=settings.analysis.spread_first_tick)
        register_query_metrics(metrics.registry, measurer)
        registry = RollbackRegistry()
        supervisor_ref: list[Supervisor] = []

        def cached(namespace: str, name: str) -> Mapping[str, Any] | None:
            return supervisor_ref[0].deployments.cache.get((namespace, name)) if supervisor_ref else None

        # One store for every Slack notifier, default and per policy: a rollout keeps one thread, also
        # across restarts and handovers (it is remembered on the Deployment).
        threads = AnnotationThreadStore(lookup=cached, writer=writer)
        built = build_notifiers(notify_config, env=env, pagerduty_ssl=extras.pagerduty_ssl, thread_store=threads)
        SCRUBBER.add(built.redactor.redact)
        # Policies' own targets (their Secrets live in the daemon's namespace); `rules.policies` is read
        # at every alert, so a reloaded policy routes its next alert to its new targets.
        router = NotifyRouter(
            defaults=built.notifiers, connections=built.connections, redactor=built.redactor,
            registry=metrics.registry, thread_store=threads,
            targets_for=lambda name: next((p.notify for p in rules.policies if p.name == name), None),
            secrets=KubeSecretSource(kube, namespace=env.get("ROLLGUARD_POD_NAMESPACE") or settings.lease_namespace,
                                     clock=clock),
            on_misrouted=lambda alert, why: _keep(writer.event(
                _deployment_ref(alert.namespace, alert.deployment), type_="Warning", reason="AlertMisrouted",
                message=f"{alert.kind.value} of policy {alert.policy} went to the default route: {why}")))
        tuning = settings.notify
        pipeline = NotificationPipeline(built.notifiers, clock=clock, metrics=PrometheusMetrics(metrics.registry),
                                        redactor=built.redactor, router=router, max_attempts=tuning.max_attempts,
                                        deadline_seconds=tuning.deadline, send_timeout=tuning.send_timeout,
                                        queue_size=tuning.queue_size)
        actions = Actions(kube, writer, pipeline, clock=clock, registry=registry, metrics=metrics,
                          settings=ActionSettings(dry_run=settings.dry_run,
                                                  max_rollbacks=settings.actions.max_rollbacks,
                                                  rollback_window=settings.actions.rollback_window,
                                                  argocd_namespace=settings.argocd_namespace))
        reconciler = Reconciler(policies=rules, measurer=measurer, actions=actions, writer=writer, registry=registry,
                                clock=clock, metrics=metrics)
        supervisor = Supervisor(kube=kube, reconciler=reconciler, clock=clock, namespaces=settings.namespaces,
                                leadership=elector, metrics=metrics)
        supervisor_ref.append(supervisor)

        def ready() -> tuple[bool, str]:
            ok, why = supervisor.ready()
            refused = rules.refused
            return ok, why + (f"; refused rule files: {', '.join(sorted(refused))}" if refused else "")

        webhook = (WEBHOOK_PATH, webhook_handler(measurer.alert_hub, token=webhook_token_from_env(
            env, file=settings.alertmanager_webhook_token_file)))
        http = HttpServer(build_http_app(metrics=metrics, ready=ready, analyses=supervisor.analyses,
                                         api_token=api_token, analysis_list=supervisor.analysis_list,
                                         alert_webhook=webhook), settings.http_listen)
        await http.start()
        log.info("rollguard started", http=http.url, namespaces=list(settings.namespaces) or "all",
                 dry_run=settings.dry_run, leader_election=settings.leader_election,
                 policies=[p.name for p in rules.policies], refused_rule_files=sorted(rules.refused))
        if rules.refused:
            _report_refused(writer, _own_pod(env), rules.refused)
        roots = {"supervisor": supervisor.run(), "rules": rules.watch(), "notifier": pipeline.run(),
                 "http": http.serve()}
        if elector is not None:
            roots["leader"] = elector.run()
        try:
            await run_guarded(roots, stop=stop)
        finally:
            await measurer.close()


def _own_pod(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The daemon's own Pod (from the downward API variables), for Events about the daemon itself."""
    name, namespace = env.get("ROLLGUARD_POD_NAME"), env.get("ROLLGUARD_POD_NAMESPACE")
    if not name or not namespace:
        return None
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": namespace, "name": name}}


def _deployment_ref(namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"namespace": namespace, "name": name}}


def _report_refused(writer: ClusterWriter, pod: Mapping[str, Any] | None, refused: Mapping[str, str]) -> None:
    """A Warning Event on the daemon's own Pod for each refused rule file (logged in any case)."""
    if pod is None:
        return
    for file, problem in sorted(refused.items()):
        _keep(writer.event(pod, type_="Warning", reason="RuleFileRefused",
                           message=f"{file} is refused; its policies do not run (the last good version, if any, "
                                   f"does): {problem}"))


_background: set[asyncio.Task[None]] = set()


def _keep(coro: Coroutine[Any, Any, None]) -> None:
    """Run a fire-and-forget write (an Event) and keep it referenced until it ends."""
    try:
        task = asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        coro.close()
        return
    _background.add(task)
    task.add_done_callback(_background.discard)


def run_command(settings: RunSettings) -> int:
    """Blocking entry point for the CLI: SIGINT/SIGTERM stop the daemon gracefully."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(settings, stop=stop)

    gcpolicy.apply()
    asyncio.run(main())
    return 0

