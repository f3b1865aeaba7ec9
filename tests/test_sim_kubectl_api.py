"""What a kubectl user sees against the simulated API server, with both kubectl binaries (no controllers)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.clock import FakeClock, ScaledClock
from sim.resources import DEPLOYMENTS, EVENTS, NAMESPACES, PODS, REPLICASETS
from sim.store import Store, copy_json, rfc3339
from sim.strategies import apply_defaults
from tests.simkit import (
    KUBECTL_BINARIES,
    FakeLogs,
    SimCluster,
    deployment_manifest,
    kubectl_env,
    make_pod,
    run_kubectl,
    sim_server,
)

pytestmark = [pytest.mark.kubectl, pytest.mark.parametrize("kubectl", KUBECTL_BINARIES)]

NS = "shop"


async def ok(cluster: SimCluster, kubectl: Path, *args: str) -> str:
    """Run kubectl, require success and return stdout."""
    result = await run_kubectl(kubectl, cluster.kubeconfig, *args, home=cluster.home)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def seed_namespace(store: Store, name: str = NS) -> None:
    namespace: dict[str, Any] = {"metadata": {"name": name}}
    apply_defaults(NAMESPACES, namespace)
    namespace["status"] = {"phase": "Active"}
    store.create(NAMESPACES, namespace)


def seed_workload(store: Store) -> dict[str, Any]:
    """A Deployment with one ReplicaSet and two pods (one ready, one crash-looping), as controllers leave them."""
    deploy = deployment_manifest("web", replicas=2)
    apply_defaults(DEPLOYMENTS, deploy)
    deploy["status"] = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1,
                        "unavailableReplicas": 1}
    stored = store.create(DEPLOYMENTS, deploy, namespace=NS)
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": stored["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}
    rs: dict[str, Any] = {
        "metadata": {"name": "web-7c5ddbdf54", "labels": {"app": "web", "pod-template-hash": "7c5ddbdf54"},
                     "ownerReferences": [owner]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7c5ddbdf54"}},
                 "template": copy_json(deploy["spec"]["template"])},
        "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}}
    rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = "7c5ddbdf54"
    apply_defaults(REPLICASETS, rs)
    store.create(REPLICASETS, rs, namespace=NS)
    for suffix, ready, waiting in (("abcde", True, None), ("fghij", False, "CrashLoopBackOff")):
        state: dict[str, Any] = {"running": {"startedAt": rfc3339(store.clock.now())}} if ready else {
            "waiting": {"reason": waiting}}
        pod = {"metadata": {"name": f"web-7c5ddbdf54-{suffix}", "labels": rs["spec"]["template"]["metadata"]["labels"]},
               "spec": {**copy_json(rs["spec"]["template"]["spec"]), "nodeName": "sim-node-1"},
               "status": {"phase": "Running", "podIP": f"10.244.0.{len(suffix) + (1 if ready else 2)}",
                          "containerStatuses": [{"name": "web", "ready": ready, "restartCount": 0 if ready else 4,
                                                 "image": "shop/web:1.0", "imageID": "", "state": state}]}}
        apply_defaults(PODS, pod)
        store.create(PODS, pod, namespace=NS)
    return stored


async def test_get_prints_server_side_tables(kubectl: Path, tmp_path: Path) -> None:
    clock = FakeClock()
    async with sim_server(tmp_path, clock=clock) as cluster:
        seed_namespace(cluster.store)
        seed_workload(cluster.store)
        await clock.advance(125)
        out = await ok(cluster, kubectl, "get", "deployments,replicasets,pods", "-n", NS)
        assert out == (
            "NAME                  READY   UP-TO-DATE   AVAILABLE   AGE\n"
            "deployment.apps/web   1/2     2            1           2m5s\n"
            "\n"
            "NAME                             DESIRED   CURRENT   READY   AGE\n"
            "replicaset.apps/web-7c5ddbdf54   2         2         1       2m5s\n"
            "\n"
            "NAME                       READY   STATUS             RESTARTS   AGE\n"
            "pod/web-7c5ddbdf54-abcde   1/1     Running            0          2m5s\n"
            "pod/web-7c5ddbdf54-fghij   0/1     CrashLoopBackOff   4          2m5s\n")
        wide = await ok(cluster, kubectl, "get", "deployment", "web", "-n", NS, "-o", "wide")
        assert wide == ("NAME   READY   UP-TO-DATE   AVAILABLE   AGE    CONTAINERS   IMAGES         SELECTOR\n"
                        "web    1/2     2            1           2m5s   web          shop/web:1.0   app=web\n")
        missing = await run_kubectl(kubectl, cluster.kubeconfig, "get", "deployment", "nope", "-n", NS,
                                    home=cluster.home)
        assert (missing.returncode, missing.stderr) == (
            1, 'Error from server (NotFound): deployments.apps "nope" not found\n')


async def test_apply_then_reapply_with_a_new_image(kubectl: Path, tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster:
        seed_namespace(cluster.store)
        manifest_path = tmp_path / "web.json"
        manifest = deployment_manifest()
        manifest_path.write_text(json.dumps(manifest))
        assert await ok(cluster, kubectl, "apply", "-n", NS, "-f", str(manifest_path)) == \
            "deployment.apps/web created\n"
        manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "shop/web:2.0"
        manifest_path.write_text(json.dumps(manifest))
        assert await ok(cluster, kubectl, "apply", "-n", NS, "-f", str(manifest_path)) == \
            "deployment.apps/web configured\n"
        assert await ok(cluster, kubectl, "apply", "-n", NS, "-f", str(manifest_path)) == \
            "deployment.apps/web unchanged\n"
        stored = cluster.store.get(DEPLOYMENTS, NS, "web")
        assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:2.0"
        assert stored["metadata"]["generation"] == 2
        last_applied = json.loads(stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
        assert last_applied["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:2.0"
        assert list(stored["metadata"]["annotations"]) == ["kubectl.kubernetes.io/last-applied-configuration"]

        # Default validation is strict: a typo is refused by the server with the real message.
        manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        manifest_path.write_text(json.dumps(manifest))
        result = await run_kubectl(kubectl, cluster.kubeconfig, "apply", "-n", NS, "-f", str(manifest_path),
                                   home=cluster.home)
        assert result.returncode == 1
        assert 'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in \
            result.stderr


async def test_create_annotate_set_image_pause_resume(kubectl: Path, tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster:
        store = cluster.store
        assert await ok(cluster, kubectl, "create", "namespace", NS) == f"namespace/{NS} created\n"
        assert await ok(cluster, kubectl, "create", "deployment", "web", "--image=nginx:1.25", "-n", NS) == \
            "deployment.apps/web created\n"
        created = store.get(DEPLOYMENTS, NS, "web")
        assert created["spec"]["template"]["spec"]["containers"] == [{
            "name": "nginx", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent", "resources": {},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]
        assert created["spec"]["selector"] == {"matchLabels": {"app": "web"}}

        assert await ok(cluster, kubectl, "annotate", "deployment/web", "owner=payments", "-n", NS) == \
            "deployment.apps/web annotated\n"
        assert store.get(DEPLOYMENTS, NS, "web")["metadata"]["annotations"] == {"owner": "payments"}

        assert await ok(cluster, kubectl, "set", "image", "deployment/web", "nginx=nginx:1.26", "-n", NS) == \
            "deployment.apps/web image updated\n"
        updated = store.get(DEPLOYMENTS, NS, "web")
        assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"

        assert await ok(cluster, kubectl, "rollout", "pause", "deployment/web", "-n", NS) == \
            "deployment.apps/web paused\n"
        assert store.get(DEPLOYMENTS, NS, "web")["spec"]["paused"] is True
        assert await ok(cluster, kubectl, "rollout", "resume", "deployment/web", "-n", NS) == \
            "deployment.apps/web resumed\n"
        assert "paused" not in store.get(DEPLOYMENTS, NS, "web")["spec"]
        assert store.get(DEPLOYMENTS, NS, "web")["metadata"]["generation"] == 5

        assert await ok(cluster, kubectl, "scale", "deployment/web", "--replicas=4", "-n", NS) == \
            "deployment.apps/web scaled\n"
        assert store.get(DEPLOYMENTS, NS, "web")["spec"]["replicas"] == 4
        # kubectl 1.36+ names the namespace in the confirmation.
        assert await ok(cluster, kubectl, "delete", "deployment", "web", "-n", NS) in (
            'deployment.apps "web" deleted\n', f'deployment.apps "web" deleted from {NS} namespace\n')
        assert store.peek(DEPLOYMENTS, NS, "web") is None


async def test_get_watch_prints_changes_made_by_another_client(kubectl: Path, tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster:
        seed_namespace(cluster.store)
        seed_workload(cluster.store)
        process = await asyncio.create_subprocess_exec(
            str(kubectl), f"--kubeconfig={cluster.kubeconfig}", f"--cache-dir={cluster.home / 'cache'}",
            "get", "deployments", "-w", "-n", NS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=kubectl_env(cluster.home))
        try:
            assert process.stdout is not None
            header = await asyncio.wait_for(process.stdout.readline(), 30)
            assert header.split() == [b"NAME", b"READY", b"UP-TO-DATE", b"AVAILABLE", b"AGE"]
            first = await asyncio.wait_for(process.stdout.readline(), 30)
            assert first.split()[:4] == [b"web", b"1/2", b"2", b"1"]
            async with aiohttp.ClientSession(base_url=cluster.base_url) as session:
                # Wait until kubectl's watch is open, then change the object from another client.
                for _ in range(100):
                    if cluster.store.subscriber_count:
                        break
                    await asyncio.sleep(0.05)
                async with session.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/web/status",
                                         json={"status": {"readyReplicas": 2, "availableReplicas": 2}},
                                         headers={"Content-Type": "application/merge-patch+json"}) as response:
                    assert response.status == 200
            changed = await asyncio.wait_for(process.stdout.readline(), 30)
            assert changed.split()[:4] == [b"web", b"2/2", b"2", b"2"]
        finally:
            process.kill()
            await process.communicate()


async def test_logs(kubectl: Path, tmp_path: Path) -> None:
    logs = FakeLogs()
    async with sim_server(tmp_path, logs=logs) as cluster:
        make_pod(cluster.store, "single", ["web"])
        make_pod(cluster.store, "double", ["web", "sidecar"])
        assert await ok(cluster, kubectl, "logs", "single") == "one\ntwo\nthree\n"
        assert await ok(cluster, kubectl, "logs", "single", "--tail=1") == "three\n"
        assert await ok(cluster, kubectl, "logs", "double", "-c", "sidecar") == "envoy ready\n"
        # Following: new lines arrive until the container stops (here: the source ends).
        logs.more.put_nowait("four")
        logs.more.put_nowait(None)
        assert await ok(cluster, kubectl, "logs", "-f", "single", "--tail=2") == "two\nthree\nfour\n"


async def test_describe_and_get_events(kubectl: Path, tmp_path: Path) -> None:
    # kubectl describe computes event ages itself, from the wall clock: the simulated clock must be real
    # time here, and the event old enough (10 minutes) that its age prints the same for a whole minute.
    async with sim_server(tmp_path, clock=ScaledClock(1.0)) as cluster:
        seed_namespace(cluster.store)
        deploy = seed_workload(cluster.store)
        seen = rfc3339(time.time() - 605)
        event = {"metadata": {"name": "web.17f3a2b4c5d6e7f8", "namespace": NS},
                 "involvedObject": {"kind": "Deployment", "namespace": NS, "name": "web",
                                    "uid": deploy["metadata"]["uid"], "apiVersion": "apps/v1",
                                    "resourceVersion": deploy["metadata"]["resourceVersion"]},
                 "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-7c5ddbdf54 to 2",
                 "type": "Normal", "source": {"component": "deployment-controller"},
                 "firstTimestamp": seen, "lastTimestamp": seen, "count": 1}
        # An event about another object with the same name must not show up in describe.
        other = copy_json(event)
        other["metadata"]["name"] = "web.other"
        other["involvedObject"]["kind"] = "ReplicaSet"
        other["reason"] = "SuccessfulCreate"
        other["message"] = "Created pod: web-7c5ddbdf54-abcde"
        async with aiohttp.ClientSession(base_url=cluster.base_url) as session:
            for body in (event, other):
                async with session.post(f"/api/v1/namespaces/{NS}/events", json=body) as response:
                    assert response.status == 201
        described = await ok(cluster, kubectl, "describe", "deployment/web", "-n", NS)
        assert re.search(r"^Name:\s+web$", described, re.M), described
        assert re.search(r"^Replicas:\s+2 desired \| 2 updated \| 2 total \| 1 available \| 1 unavailable$",
                         described, re.M), described
        assert re.search(r"^NewReplicaSet:\s+web-7c5ddbdf54 \(2/2 replicas created\)$", described, re.M), described
        events_block = described.split("Events:", 1)[1]
        rows = [line.split(None, 4) for line in events_block.strip().splitlines()]
        assert rows[0] == ["Type", "Reason", "Age", "From", "Message"]
        assert rows[2:] == [["Normal", "ScalingReplicaSet", "10m", "deployment-controller",
                             "Scaled up replica set web-7c5ddbdf54 to 2"]]
        listed = await ok(cluster, kubectl, "get", "events", "-n", NS)
        assert listed.splitlines() == [
            "LAST SEEN   TYPE     REASON              OBJECT           MESSAGE",
            "10m         Normal   ScalingReplicaSet   deployment/web   Scaled up replica set web-7c5ddbdf54 to 2",
            "10m         Normal   SuccessfulCreate    replicaset/web   Created pod: web-7c5ddbdf54-abcde"]
        assert cluster.store.list_objects(EVENTS, NS)[0][0]["count"] == 1


async def test_rollout_history_and_undo_against_seeded_replicasets(kubectl: Path, tmp_path: Path) -> None:
    """`rollout undo` reads the ReplicaSets the controller left and sends its json-patch; the server applies it."""
    async with sim_server(tmp_path) as cluster:
        store = cluster.store
        seed_namespace(store)
        deploy = deployment_manifest("web", image="shop/web:2.0")
        deploy["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2", "team": "payments"}
        apply_defaults(DEPLOYMENTS, deploy)
        stored = store.create(DEPLOYMENTS, deploy, namespace=NS)
        owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": stored["metadata"]["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        for revision, image, template_hash in ((1, "shop/web:1.0", "5d4f8b7c9a"), (2, "shop/web:2.0", "7c5ddbdf54")):
            template = copy_json(stored["spec"]["template"])
            template["metadata"]["labels"]["pod-template-hash"] = template_hash
            template["spec"]["containers"][0]["image"] = image
            rs: dict[str, Any] = {
                "metadata": {"name": f"web-{template_hash}", "labels": template["metadata"]["labels"],
                             "ownerReferences": [owner],
                             "annotations": {"deployment.kubernetes.io/revision": str(revision),
                                             "kubernetes.io/change-cause": f"image {image}"}},
                "spec": {"replicas": 0 if revision == 1 else 3, "template": template,
                         "selector": {"matchLabels": {"app": "web", "pod-template-hash": template_hash}}}}
            apply_defaults(REPLICASETS, rs)
            store.create(REPLICASETS, rs, namespace=NS)
        history = await ok(cluster, kubectl, "rollout", "history", "deployment/web", "-n", NS)
        assert history == ("deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         image shop/web:1.0\n"
                           "2         image shop/web:2.0\n\n")
        assert await ok(cluster, kubectl, "rollout", "undo", "deployment/web", "-n", NS) == \
            "deployment.apps/web rolled back\n"
        undone = store.get(DEPLOYMENTS, NS, "web")
        assert undone["spec"]["template"] == {**stored["spec"]["template"], "spec": {
            **stored["spec"]["template"]["spec"],
            "containers": [{**stored["spec"]["template"]["spec"]["containers"][0], "image": "shop/web:1.0"}]}}, \
            "the template copied back from the ReplicaSet equals a defaulted one (no hash label, no nulls)"
        assert undone["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "2",
                                                     "kubernetes.io/change-cause": "image shop/web:1.0"}
        assert undone["metadata"]["generation"] == 2
