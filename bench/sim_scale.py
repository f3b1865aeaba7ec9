"""The simulated cluster at scale: N Deployments with 3 replicas each (N·3 pods), created, listed and watched.

What it measures (the simulator's own cost, in this process — the cluster runs in the bench process):
* time for the controllers to roll out every Deployment (N ReplicaSets, 3N pods, all Ready);
* RSS of this process before and after (the store, the controllers, the event history);
* time to LIST all Deployments and all pods over HTTP through `KubeClient.list` (pages of 500, as
  kubectl and the daemon do), and the bytes returned;
* time to receive the initial ADDED events of a watch with no resourceVersion, for all Deployments.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.common import create_deployments, proc_sample, wait_settled
from daemon.kube.client import KubeClient, api_path
from sim.cluster import running_cluster


def _rss_mib() -> float:
    return proc_sample(os.getpid()).rss_mib


async def run(*, sizes: list[int], replicas: int = 3, per_namespace: int = 100, workdir: Path) -> dict[str, Any]:
    rows = []
    for size in sizes:
        async with running_cluster(workdir=workdir, speed=50) as cluster:
            rss_before = _rss_mib()
            namespaces = [f"sim-{i // per_namespace:03d}" for i in range(0, size, per_namespace)]
            started = time.monotonic()
            for index, namespace in enumerate(namespaces):
                count = min(per_namespace, size - index * per_namespace)
                create_deployments(cluster.store, namespace, (f"app-{index}-{j}" for j in range(count)),
                                   replicas=replicas, image="bench:v1")
            rolled_out_s = await wait_settled(cluster.store, namespaces=namespaces, expected=size,
                                              timeout=max(300.0, size * 0.2))
            create_s = time.monotonic() - started
            rss_after = _rss_mib()
            async with await KubeClient.connect(cluster.kubeconfig) as kube:
                t0 = time.monotonic()
                deployments = await kube.list(api_path("apps/v1", "deployments"))
                list_deployments_s = time.monotonic() - t0
                t0 = time.monotonic()
                pods = await kube.list(api_path("v1", "pods"))
                list_pods_s = time.monotonic() - t0
                t0 = time.monotonic()
                added = 0
                async for event in kube.watch(api_path("apps/v1", "deployments"), {}, timeout_seconds=60):
                    if event.get("type") == "ADDED":
                        added += 1
                        if added == size:
                            break
                watch_initial_s = time.monotonic() - t0
            rows.append({
                "deployments": size, "pods": len(pods["items"]), "replicas": replicas,
                "create_and_roll_out_s": round(create_s, 2), "roll_out_wait_s": round(rolled_out_s, 2),
                "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1),
                "list_deployments_s": round(list_deployments_s, 3),
                "listed_deployments": len(deployments["items"]),
                "list_pods_s": round(list_pods_s, 3), "watch_initial_events_s": round(watch_initial_s, 3),
            })
    return {"rows": rows, "note": "the simulator's cost in the bench process (not the daemon's)"}
