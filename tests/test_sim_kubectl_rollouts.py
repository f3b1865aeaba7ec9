"""The simulated cluster with its controllers, judged by the real kubectl (both versions): rollouts,
progress deadlines, history, undo and describe behave as on a real cluster (k8s-rollout-spec 1–4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sim.cluster import SimCluster, running_cluster
from tests.simkit import KUBECTL_BINARIES, run_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.parametrize("kubectl", KUBECTL_BINARIES),
              pytest.mark.timeout(180)]


def manifest(image: str, *, deadline: int = 600) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "progressDeadlineSeconds": deadline, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image,
                                                       "env": [{"name": "SIM_READY_DELAY", "value": "1"}]}]}}},
    })


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimCluster]:
    # Simulated time at 5x: pods get ready in 0.2 s of real time, deadlines pass 5x faster.
    async with running_cluster(workdir=tmp_path, speed=5) as running:
        yield running


async def kubectl_ok(kubectl: Path, cluster: SimCluster, *args: str, stdin: str | None = None) -> str:
    result = await run_kubectl(kubectl, cluster.kubeconfig, *args, timeout=90,
                               stdin=stdin.encode() if stdin is not None else None)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def revisions(history: str) -> list[str]:
    return [line.split()[0] for line in history.splitlines()[2:] if line.strip()]


async def replica_sets(kubectl: Path, cluster: SimCluster) -> dict[str, dict[str, Any]]:
    listing = json.loads(await kubectl_ok(kubectl, cluster, "get", "rs", "-l", "app=web", "-o", "json"))
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs for rs in listing["items"]}


async def test_set_image_and_rollout_status_succeeds(kubectl: Path, cluster: SimCluster) -> None:
    await kubectl_ok(kubectl, cluster, "apply", "-f", "-", stdin=manifest("web:v1"))
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    await kubectl_ok(kubectl, cluster, "set", "image", "deployment/web", "web=web:v2")
    out = await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    assert 'deployment "web" successfully rolled out' in out, out
    assert "Waiting for deployment" in out, out  # it watched the rollout happen, not just its end


async def test_a_never_ready_image_exceeds_the_progress_deadline(kubectl: Path, cluster: SimCluster) -> None:
    await kubectl_ok(kubectl, cluster, "apply", "-f", "-", stdin=manifest("web:v1", deadline=10))
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    await kubectl_ok(kubectl, cluster, "set", "image", "deployment/web", "web=web:v2-never-ready")
    result = await run_kubectl(kubectl, cluster.kubeconfig, "rollout", "status", "deployment/web",
                               "--timeout=90s", timeout=120)
    assert result.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in result.stderr + result.stdout


async def test_history_and_undo_renumber_revisions_like_a_real_cluster(kubectl: Path, cluster: SimCluster) -> None:
    for image in ("web:v1", "web:v2", "web:v3"):
        await kubectl_ok(kubectl, cluster, "apply", "-f", "-", stdin=manifest(image))
        await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    history = await kubectl_ok(kubectl, cluster, "rollout", "history", "deployment/web")
    assert revisions(history) == ["1", "2", "3"], history

    out = await kubectl_ok(kubectl, cluster, "rollout", "undo", "deployment/web")
    assert out.strip() == "deployment.apps/web rolled back"
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    history = await kubectl_ok(kubectl, cluster, "rollout", "history", "deployment/web")
    assert revisions(history) == ["1", "3", "4"], history
    by_image = await replica_sets(kubectl, cluster)
    v2 = by_image["web:v2"]["metadata"]["annotations"]
    assert v2["deployment.kubernetes.io/revision"] == "4"
    assert v2["deployment.kubernetes.io/revision-history"] == "2"
    assert by_image["web:v2"]["status"]["readyReplicas"] == 3
    assert by_image["web:v3"]["spec"]["replicas"] == 0

    out = await kubectl_ok(kubectl, cluster, "rollout", "undo", "deployment/web", "--to-revision=1")
    assert out.strip() == "deployment.apps/web rolled back"
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    deployment = json.loads(await kubectl_ok(kubectl, cluster, "get", "deployment/web", "-o", "json"))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v1"
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "5"
    assert revisions(await kubectl_ok(kubectl, cluster, "rollout", "history", "deployment/web")) == ["3", "4", "5"]

    result = await run_kubectl(kubectl, cluster.kubeconfig, "rollout", "undo", "deployment/web", "--to-revision=9")
    assert result.returncode != 0
    assert "unable to find specified revision 9 in history" in result.stderr


async def test_describe_shows_replica_sets_and_events(kubectl: Path, cluster: SimCluster) -> None:
    await kubectl_ok(kubectl, cluster, "apply", "-f", "-", stdin=manifest("web:v1"))
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    await kubectl_ok(kubectl, cluster, "set", "image", "deployment/web", "web=web:v2")
    await kubectl_ok(kubectl, cluster, "rollout", "status", "deployment/web", "--timeout=60s")
    out = await kubectl_ok(kubectl, cluster, "describe", "deployment/web")
    rs = await replica_sets(kubectl, cluster)
    new, old = rs["web:v2"]["metadata"]["name"], rs["web:v1"]["metadata"]["name"]
    assert f"NewReplicaSet:   {new} (3/3 replicas created)" in out, out
    assert f"OldReplicaSets:  {old} (0/0 replicas created)" in out, out
    assert "ScalingReplicaSet" in out, out
    assert f"Scaled up replica set {new}" in out, out
