"""Rollback path cost: `daemon.kube.rollback.undo` next to a `kubectl rollout undo` subprocess, same cluster.

Twin Deployments (`twin-rollguard`, `twin-kubectl`; `replicas: 0`, two revisions each) in the simulated
cluster. Each repetition undoes both — rollguard's `undo` through a long-lived `KubeClient` (as the
daemon holds one), fenced on the revision it read, and the real `kubectl rollout undo` as a child
process (HOME in the work directory, so its discovery cache is warm after the first call) — in
alternating order, and waits for the controller to settle both before the next repetition. An undo
of an undo flips back, so every repetition does a real rollback. The first repetition is a warm-up.

Also reported: the API requests each path sends (from the simulated API server's audit log) and the
cost of starting kubectl at all (`kubectl version --client`), which is most of kubectl's time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import create_deployments, percentile, rolled_out, summary
from daemon.kube.client import KubeClient
from daemon.kube.rollback import Fence, current_hash, undo
from daemon.kube.rollout_state import revision_of
from sim.cluster import SimCluster, running_cluster
from sim.resources import DEPLOYMENTS, REPLICASETS

NAMESPACE = "bench-undo"
OURS = "twin-rollguard"
THEIRS = "twin-kubectl"


def _settled(cluster: SimCluster, name: str) -> bool:
    deployment = cluster.store.peek(DEPLOYMENTS, NAMESPACE, name)
    if deployment is None or not rolled_out(deployment):
        return False
    # The controller has renumbered the re-used ReplicaSet: the Deployment's revision is the highest.
    replica_sets, _ = cluster.store.list_objects(REPLICASETS, NAMESPACE)
    revisions = [revision_of(rs) or 0 for rs in replica_sets if rs["metadata"]["name"].startswith(name + "-")]
    return bool(revisions) and revision_of(deployment) == max(revisions) and len(revisions) >= 2


async def _wait_settled(cluster: SimCluster, *names: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(_settled(cluster, n) for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{names} did not settle within {timeout:g}s")
        await asyncio.sleep(0.02)


async def _kubectl(kubeconfig: Path, home: Path, *args: str) -> float:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("kubectl", "--kubeconfig", str(kubeconfig), *args,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.returncode}: {err.decode().strip()}")
    del out
    return elapsed


async def _ours(cluster: SimCluster, client: KubeClient) -> float:
    deployment = cluster.store.peek(DEPLOYMENTS, NAMESPACE, OURS)
    assert deployment is not None
    replica_sets, _ = cluster.store.list_objects(REPLICASETS, NAMESPACE)
    fence = Fence(revision_of(deployment) or 0, current_hash(deployment, replica_sets) or "")
    started = time.perf_counter()
    result = await undo(client, NAMESPACE, OURS, fence=fence, keep_prefix="rollguard.io/")
    elapsed = time.perf_counter() - started
    if result.plan.skipped:
        raise RuntimeError(f"rollguard's undo was skipped: {result.plan.message}")
    return elapsed


def _requests(cluster: SimCluster, since: int) -> list[str]:
    """The API requests made since audit record `since` (the controllers write to the store, not through HTTP)."""
    return [f"{r.verb} {r.resource}" for r in cluster.audit[since:]]


async def run(*, repetitions: int = 20) -> dict[str, Any]:
    if shutil.which("kubectl") is None:
        raise RuntimeError("kubectl is not on PATH")
    ours: list[float] = []
    theirs: list[float] = []
    startup: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-undo-") as tmp:
        work = Path(tmp)
        async with running_cluster(workdir=work, speed=1.0) as cluster, aiohttp.ClientSession() as session:
            create_deployments(cluster.store, NAMESPACE, [OURS, THEIRS], image="bench:v1")
            await _wait_settled_first(cluster)
            for name in (OURS, THEIRS):
                url = f"{cluster.api_url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"
                body = {"spec": {"template": {"spec": {"containers": [
                    {"name": "web", "image": "bench:v2", "ports": [{"name": "http", "containerPort": 8000}]}]}}}}
                async with session.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}):
                    pass
            await _wait_settled(cluster, OURS, THEIRS)
            requests: dict[str, list[str]] = {}
            async with await KubeClient.connect(cluster.kubeconfig) as client:
                for i in range(repetitions + 1):
                    order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
                    for which in order:
                        mark = len(cluster.audit)
                        if which == "ours":
                            elapsed = await _ours(cluster, client)
                            if i:
                                ours.append(elapsed)
                            requests.setdefault("rollguard", _requests(cluster, mark))
                        else:
                            elapsed = await _kubectl(cluster.kubeconfig, work, "rollout", "undo",
                                                     f"deployment/{THEIRS}", "-n", NAMESPACE)
                            if i:
                                theirs.append(elapsed)
                                requests.setdefault("kubectl", _requests(cluster, mark))
                        await _wait_settled(cluster, OURS, THEIRS)
                    startup.append(await _kubectl(cluster.kubeconfig, work, "version", "--client"))
    p50_ours, p50_theirs = percentile(ours, 50), percentile(theirs, 50)
    return {
        "scenario": "rollback_cost",
        "repetitions": repetitions,
        "rollguard_undo_s": summary(ours, digits=4),
        "kubectl_rollout_undo_s": summary(theirs, digits=4),
        "kubectl_startup_s": summary(startup, digits=4),
        "ratio_kubectl_over_rollguard_p50": round(p50_theirs / p50_ours, 1) if p50_ours and p50_theirs else None,
        "requests": requests,
    }


async def _wait_settled_first(cluster: SimCluster) -> None:
    deadline = time.monotonic() + 30
    while True:
        objs = [cluster.store.peek(DEPLOYMENTS, NAMESPACE, n) for n in (OURS, THEIRS)]
        if all(o is not None and rolled_out(o) for o in objs):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the twin Deployments did not roll out")
        await asyncio.sleep(0.05)
