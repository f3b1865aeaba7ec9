"""The simulated cluster of `mass_rollout` in a process of its own: `python -m bench.mass_cluster`.

At 10,000 Deployments the simulated API server is busy (10,000 image changes, the ReplicaSets the
Deployment controller makes for them, the daemon's state annotations and Events, its watches); in the
bench process it also competed with the bench's own work (polling, parsing the daemon's log), so the
figures were not the daemon's. Here it runs alone: the child starts `sim.cluster.running_cluster` with a
real Prometheus, creates the `traffic` Deployment and `count` bench Deployments straight into its store
(before any client is there: ten thousand POSTs would measure the simulator), waits until they are
rolled out, prints one JSON line (`api_url`, `kubeconfig`, `prometheus_url`, `settled_s`) and serves
until SIGTERM. The bench process talks to it over HTTP only, as the daemon does, and reads its CPU time
from `/proc` (`SimProcess.sample`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import analyses
from bench.common import REPO, ProcSample, bench_deployment, create_object, log_tail, proc_sample, wait_settled

READY_TIMEOUT_BASE_S = 120.0
READY_TIMEOUT_PER_DEPLOYMENT_S = 0.05


async def _serve(workdir: Path, count: int, scrape_interval: float) -> None:
    from sim.cluster import running_cluster
    from sim.demo.manifests import backend_deployment
    from sim.resources import DEPLOYMENTS

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_cluster(workdir=workdir, speed=1.0, with_prometheus=True,
                               scrape_interval=scrape_interval) as cluster:
        create_object(cluster.store, DEPLOYMENTS, backend_deployment(
            "backend:v1", namespace=analyses.TRAFFIC_NAMESPACE, name="traffic", replicas=3,
            env={"SIM_READY_DELAY": "0", "SIM_ERROR_RATIO": "0.01", "SIM_RPS": "50"}))
        for i in range(count):
            create_object(cluster.store, DEPLOYMENTS, bench_deployment(
                analyses.name_of(i), analyses.namespace_of(i), labels=analyses.LABELS))
        namespaces = sorted({analyses.namespace_of(i) for i in range(count)})
        settled = await wait_settled(cluster.store, namespaces=namespaces, expected=count,
                                     timeout=READY_TIMEOUT_BASE_S + count * READY_TIMEOUT_PER_DEPLOYMENT_S)
        print(json.dumps({"api_url": cluster.api_url, "kubeconfig": str(cluster.kubeconfig),
                          "prometheus_url": cluster.prometheus_url, "settled_s": round(settled, 1)}), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mass_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="kubeconfig, Prometheus' targets and data")
    parser.add_argument("--count", type=int, required=True, help="bench Deployments to create")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus' scrape interval, s")
    args = parser.parse_args(argv)
    from daemon.logs import configure_logging
    from daemon.settings import LogSettings

    configure_logging(LogSettings(format="console", level="warning"), stream=sys.stderr)
    asyncio.run(_serve(args.workdir, args.count, args.scrape_interval))
    return 0


@dataclass
class SimProcess:
    """The child serving the simulated cluster; its log (stderr) goes to `log_path`."""

    proc: asyncio.subprocess.Process
    api_url: str
    kubeconfig: Path
    prometheus_url: str
    log_path: Path
    settled_s: float
    """How long the child's controllers took to roll out the initial Deployments."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def sample(self) -> ProcSample:
        """The child's own CPU time and memory (Prometheus, its child, is not included)."""
        return proc_sample(self.pid)


@contextlib.asynccontextmanager
async def running_mass_cluster(*, workdir: Path, count: int, scrape_interval: float = 5.0) -> AsyncIterator[SimProcess]:
    """Start `python -m bench.mass_cluster` and wait for its ready line; SIGTERM it (SIGKILL after 30 s) on exit."""
    log_path = workdir / "sim.log"
    args = [sys.executable, "-m", "bench.mass_cluster", "--workdir", str(workdir), "--count", str(count),
            "--scrape-interval", f"{scrape_interval:g}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log_file, env=env,
                                                    cwd=str(REPO))
    try:
        assert proc.stdout is not None
        timeout = 2 * READY_TIMEOUT_BASE_S + count * READY_TIMEOUT_PER_DEPLOYMENT_S
        started = time.monotonic()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            raise TimeoutError(f"the simulated cluster was not ready after {time.monotonic() - started:.0f} s\n"
                               f"--- its log tail ---\n{log_tail(log_path)}") from None
        if not line:
            await proc.wait()
            raise RuntimeError(f"the simulated cluster exited ({proc.returncode})\n--- its log tail ---\n"
                               f"{log_tail(log_path)}")
        ready = json.loads(line)
        yield SimProcess(proc, str(ready["api_url"]), Path(ready["kubeconfig"]), str(ready["prometheus_url"]),
                         log_path, float(ready["settled_s"]))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
