"""The whole simulated cluster in one async context manager: API server, controllers, workloads, Prometheus.

    async with running_cluster(workdir=tmp, speed=10, with_prometheus=True) as cluster:
        cluster.api_url        # http://127.0.0.1:PORT — kubectl and kubernetes_asyncio talk to this
        cluster.kubeconfig     # a kubeconfig file naming that URL
        cluster.workload_url   # the pods' /metrics and the HTTP proxy for http://svc.ns:port URLs
        cluster.prometheus_url # a real Prometheus scraping every simulated pod (with_prometheus)

`rollguard sim` runs the same thing until SIGINT/SIGTERM and prints where everything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from daemon.clock import Clock, ScaledClock
from daemon.settings import ListenAddress
from sim.apiserver import AuditRecord, build_app
from sim.controllers.manager import ControllerManager
from sim.faults import Faults
from sim.kubeconfig import write_kubeconfig
from sim.prometheus import PrometheusServer, PrometheusTargets
from sim.proxy import ServiceProxy
from sim.services import WorkloadServer
from sim.settings import SimSettings
from sim.store import Store
from sim.workload import WorkloadLogs


@dataclass
class SimCluster:
    """Handles on a running simulated cluster."""

    store: Store
    clock: Clock
    api_url: str
    kubeconfig: Path
    workload_url: str
    """Serves every pod's `/pods/NS/POD/metrics`, and proxies `http://svc.ns:port/...` to Ready pods."""
    prometheus: PrometheusServer | None = None
    audit: list[AuditRecord] = field(default_factory=list)
    """Every API request (RBAC verb, group, resource, ...), for least-privilege checks."""

    @property
    def prometheus_url(self) -> str | None:
        return self.prometheus.url if self.prometheus is not None else None


@contextlib.asynccontextmanager
async def running_cluster(*, workdir: Path, listen: ListenAddress | None = None, speed: float = 1.0,
                          clock: Clock | None = None, with_prometheus: bool = False, scrape_interval: float = 1.0,
                          kubeconfig_path: Path | None = None,
                          faults: Faults | None = None) -> AsyncIterator[SimCluster]:
    """Start everything; stop everything (in reverse order) on exit, whatever happened.

    `faults` (tests only) lets the API server inject errors, latency and concurrent writes (`sim.faults`).
    """
    listen = listen or ListenAddress("127.0.0.1", 0)
    clock = clock or ScaledClock(speed)
    store = Store(clock)
    logs = WorkloadLogs(store, clock)
    audit: list[AuditRecord] = []
    proxy = ServiceProxy(store)
    runner = web.AppRunner(build_app(store, logs=logs, audit=audit, faults=faults, proxy=proxy), access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, listen.host, listen.port)
        await site.start()
        port = runner.addresses[0][1]
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        api_url = f"http://{host}:{port}"
        controllers = ControllerManager(store, clock)
        await controllers.start()
        stack.push_async_callback(controllers.stop)
        workload = WorkloadServer(store, clock)
        await workload.start()
        stack.push_async_callback(workload.stop)
        proxy.workload_url = workload.url  # the service proxy reaches pods through the workload server
        kubeconfig = write_kubeconfig(kubeconfig_path or workdir / "kubeconfig", api_url)
        cluster = SimCluster(store, clock, api_url, kubeconfig, workload.url, audit=audit)
        if with_prometheus:
            targets = PrometheusTargets(store, workload.url, workdir / "prometheus-targets.json")
            stack.callback(targets.close)
            prometheus = PrometheusServer(targets.path, scrape_interval=scrape_interval)
            await prometheus.start()
            stack.push_async_callback(prometheus.stop)
            cluster.prometheus = prometheus
        yield cluster


def sim_command(settings: SimSettings) -> int:
    """`rollguard sim`: serve until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with tempfile.TemporaryDirectory(prefix="rollguard-sim-") as tmp:
            async with running_cluster(workdir=Path(tmp), listen=settings.listen, speed=settings.speed,
                                       with_prometheus=settings.with_prometheus,
                                       kubeconfig_path=settings.kubeconfig_out) as cluster:
                lines = [f"API server:  {cluster.api_url}", f"kubeconfig:  {cluster.kubeconfig}",
                         f"workloads:   {cluster.workload_url}  (HTTP proxy for http://SERVICE.NAMESPACE:PORT/)"]
                if cluster.prometheus_url:
                    lines.append(f"Prometheus:  {cluster.prometheus_url}")
                lines.append(f"try:         kubectl --kubeconfig {cluster.kubeconfig} get deployments -A")
                print("\n".join(lines), flush=True)
                await stop.wait()
                print("stopping", file=sys.stderr, flush=True)

    asyncio.run(main())
    return 0
