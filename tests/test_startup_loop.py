"""While thousands of Deployments are listed and reconciled at start, the event loop keeps serving.

`/healthz`, the leader lease renewal and the other watch all run on the daemon's one event loop. A
first list of 10,000 Deployments is handed to the supervisor item by item and then reconciled key by
key, none of which waits on anything: unless the supervisor yields, nothing else runs until it is all
done (seconds at that size). Here a probe task stands for `/healthz`: it records how much start-up
work (informer events plus reconciles) happened between two of its turns on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from bench.common import bench_deployment, create_object, wait_settled
from daemon.clock import ScaledClock
from daemon.kube.client import KubeClient
from daemon.reconcile import Reconciler
from daemon.supervisor import YIELD_EVERY, Supervisor
from sim.cluster import running_cluster
from sim.resources import DEPLOYMENTS
from tests.waiting import eventually

DEPLOYMENT_COUNT = 2000


class CountingReconciler:
    """The supervisor's reconciler seam: counts the keys it is handed."""

    def __init__(self) -> None:
        self.reconciled = 0

    async def reconcile(self, key: tuple[str, str], deployment: dict[str, Any] | None,
                        replica_sets: Sequence[dict[str, Any]], *, first_sight: bool) -> None:
        self.reconciled += 1

    async def cancel_all(self) -> None:
        return None

    def forget_all(self) -> None:
        return None

    def analyses(self) -> list[dict[str, Any]]:
        return []


async def test_the_loop_is_shared_while_thousands_of_deployments_are_listed_and_reconciled(tmp_path: Path) -> None:
    async with running_cluster(workdir=tmp_path, speed=20) as cluster:
        namespaces = [f"team-{i:02d}" for i in range(DEPLOYMENT_COUNT // 100)]
        for i in range(DEPLOYMENT_COUNT):
            create_object(cluster.store, DEPLOYMENTS, bench_deployment(f"svc-{i:04d}", namespaces[i // 100]))
        await wait_settled(cluster.store, namespaces=namespaces, expected=DEPLOYMENT_COUNT, timeout=120)
        reconciler = CountingReconciler()
        async with await KubeClient.connect(cluster.kubeconfig) as kube:
            supervisor = Supervisor(kube=kube, reconciler=cast(Reconciler, reconciler), clock=ScaledClock(1.0))

            def work_done() -> int:
                return len(supervisor.deployments.cache) + len(supervisor.replicasets.cache) + reconciler.reconciled

            bursts: list[int] = []

            async def probe() -> None:  # stands for /healthz: how much happened while it could not run
                last = work_done()
                while True:
                    await asyncio.sleep(0)
                    now = work_done()
                    bursts.append(now - last)
                    last = now

            running = asyncio.create_task(supervisor.run(), name="supervisor")
            probing = asyncio.create_task(probe(), name="probe")
            try:
                await eventually(lambda: reconciler.reconciled >= DEPLOYMENT_COUNT, timeout=60,
                                 what="every Deployment reconciled")
            finally:
                for task in (running, probing):
                    task.cancel()
                await asyncio.gather(running, probing, return_exceptions=True)
    assert (len(supervisor.deployments.cache), len(supervisor.replicasets.cache)) == (DEPLOYMENT_COUNT,) * 2
    # Three tasks share the work (two informers, the reconcile worker); each may run one step of at most
    # YIELD_EVERY items between two turns of the probe.
    assert max(bursts) <= 3 * YIELD_EVERY, (
        f"{max(bursts)} Deployments/ReplicaSets were handled without letting anything else run "
        f"(at most {3 * YIELD_EVERY} expected)")
