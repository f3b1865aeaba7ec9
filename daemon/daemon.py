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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from daemon.actions import Actions, ActionSettings, RollbackRegistry
from daemon.aio import run_guarded
from daemon.clock import Clock, SystemClock
from daemon.http import HttpServer, build_http_app
from daemon.kube.client import KubeClient
from daemon.kube.events import EventRecorder
from daemon.kube.leader import LeaderElector, LeaseConfig
from daemon.kube.secrets import KubeSecretSource
from daemon.measure import ProviderMeasurer
from daemon.metrics import Metrics
from daemon.notify import NotificationPipeline, build_notifiers
from daemon.notify.configfile import load_notify_config
from daemon.notify.model import InMemoryThreadStore
from daemon.notify.pipeline import PrometheusMetrics
from daemon.notify.routing import NotifyRouter
from daemon.reconcile import Reconciler
from daemon.rules.model import RollbackPolicy
from daemon.rulesets import RuleSet
from daemon.settings import RunSettings
from daemon.supervisor import Supervisor
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
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=200, limit_per_host=20, ttl_dns_cache=30)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        yield session


async def run_daemon(settings: RunSettings, *, stop: asyncio.Event | None = None, extras: Extras | None = None,
                     env: Mapping[str, str] | None = None) -> None:
    """Run until `stop` is set (or a root task dies: then `RootTaskFailed` propagates)."""
    extras = extras or Extras()
    env = os.environ if env is None else env
    clock = extras.clock or SystemClock()
    metrics = Metrics()
    rules = RuleSet(settings.rules_dir, metrics=metrics, clock=clock)
    rules.load()
    notify_config = dict(extras.notify_config) if extras.notify_config is not None else notify_config_from(
        settings.notify_config, rules.policies, env)
    # One store for every Slack notifier, default and per policy: a rollout keeps one thread.
    threads = InMemoryThreadStore()
    built = build_notifiers(notify_config, env=env, pagerduty_ssl=extras.pagerduty_ssl, thread_store=threads)
    kube = await KubeClient.connect(settings.kubeconfig)
    # Policies' own targets (their Secrets live in the daemon's namespace); `rules.policies` is read
    # at every alert, so a reloaded policy routes its next alert to its new targets.
    router = NotifyRouter(
        defaults=built.notifiers, connections=built.connections, redactor=built.redactor, registry=metrics.registry,
        thread_store=threads,
        targets_for=lambda name: next((p.notify for p in rules.policies if p.name == name), None),
        secrets=KubeSecretSource(kube, namespace=env.get("ROLLGUARD_POD_NAMESPACE") or settings.lease_namespace,
                                 clock=clock))
    pipeline = NotificationPipeline(built.notifiers, clock=clock, metrics=PrometheusMetrics(metrics.registry),
                                    redactor=built.redactor, router=router)
    elector: LeaderElector | None = None
    if settings.leader_election:
        elector = LeaderElector(kube, LeaseConfig(settings.lease_name, settings.lease_namespace, settings.identity,
                                                  lease_duration=settings.lease_duration,
                                                  renew_deadline=settings.lease_duration * 2 / 3,
                                                  retry_period=settings.lease_duration / 7.5), clock=clock,
                                on_change=lambda leading: metrics.is_leader.set(1 if leading else 0))

    def is_leader() -> bool:
        leading = elector is None or elector.is_leader
        metrics.is_leader.set(1 if leading else 0)
        return leading

    events = EventRecorder(kube, clock=clock, dry_run=settings.dry_run, instance=settings.identity or None)
    writer = ClusterWriter(kube, events, dry_run=settings.dry_run,
                           lease=elector.holds_lease if elector is not None else None,
                           margin=settings.actions.write_margin)
    prometheus_url = extras.prometheus_url or settings.prometheus_url
    try:
        async with _session() as session:
            measurer = ProviderMeasurer(prometheus_url=prometheus_url, kube=kube, session=session,
                                        proxy=settings.service_proxy, clock=clock)
            registry = RollbackRegistry()
            actions = Actions(kube, writer, pipeline, clock=clock, registry=registry, metrics=metrics,
                              settings=ActionSettings(dry_run=settings.dry_run,
                                                      max_rollbacks=settings.actions.max_rollbacks,
                                                      rollback_window=settings.actions.rollback_window))
            reconciler = Reconciler(policies=rules, measurer=measurer, actions=actions, writer=writer,
                                    registry=registry, clock=clock, metrics=metrics)
            namespaces = settings.namespaces
            supervisor = Supervisor(kube=kube, reconciler=reconciler, clock=clock, namespaces=namespaces,
                                    is_leader=is_leader)
            if elector is not None:
                def leadership_changed(leading: bool) -> None:
                    metrics.is_leader.set(1 if leading else 0)
                    supervisor.leadership_changed()  # resume or stop analyses now, not at the next watch event

                elector.on_change = leadership_changed
            http = HttpServer(build_http_app(metrics=metrics, ready=supervisor.ready, analyses=supervisor.analyses),
                              settings.http_listen)
            await http.start()
            await pipeline.start()
            log.info("rollguard started", http=http.url, namespaces=list(namespaces) or "all",
                     dry_run=settings.dry_run, leader_election=settings.leader_election,
                     policies=[p.name for p in rules.policies])
            roots = {"supervisor": supervisor.run(), "rules": rules.watch()}
            if elector is not None:
                roots["leader"] = elector.run()
            try:
                await run_guarded(roots, stop=stop)
            finally:
                await pipeline.stop(drain_timeout=5.0)
                await http.stop()
                await measurer.close()
    finally:
        await kube.close()
        log.info("rollguard stopped")


def run_command(settings: RunSettings) -> int:
    """Blocking entry point for the CLI: SIGINT/SIGTERM stop the daemon gracefully."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(settings, stop=stop)

    asyncio.run(main())
    return 0

