"""CustomResourceDefinitions registered at run time, as kubectl and an HTTP client see them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sim.gitops import GITOPS_CRDS
from tests.simkit import KUBECTL_BINARIES, SimCluster, run_kubectl, sim_server

APPLICATION = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "backend", "namespace": "default"},
               "spec": {"source": {"repoURL": "https://git.example/shop.git", "path": "backend"},
                        "syncPolicy": {"automated": {"selfHeal": True, "prune": True}}}}
KUSTOMIZATION = {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                 "metadata": {"name": "backend", "namespace": "default"},
                 "spec": {"interval": "1m", "path": "./backend", "suspend": False}}


async def install_crds(session: aiohttp.ClientSession, base_url: str) -> None:
    for crd in GITOPS_CRDS:
        async with session.post(f"{base_url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                json=crd) as response:
            assert response.status == 201, await response.text()


async def ok(cluster: SimCluster, kubectl: Path, *args: str) -> str:
    result = await run_kubectl(kubectl, cluster.kubeconfig, *args, home=cluster.home)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


async def test_a_registered_crd_is_discovered_and_served(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, aiohttp.ClientSession() as session:
        base = cluster.base_url
        async with session.get(f"{base}/apis/argoproj.io/v1alpha1/namespaces/default/applications") as response:
            assert response.status == 404, "not served before its CRD exists"
        await install_crds(session, base)
        async with session.get(f"{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                               "applications.argoproj.io") as response:
            crd = await response.json()
        assert [c["type"] for c in crd["status"]["conditions"] if c["status"] == "True"] == \
            ["NamesAccepted", "Established"]
        async with session.get(f"{base}/apis/argoproj.io/v1alpha1") as response:
            listing = await response.json()
        assert [(r["name"], r["kind"], r["namespaced"]) for r in listing["resources"]] == \
            [("applications", "Application", True)]
        async with session.get(f"{base}/apis") as response:
            groups = {g["name"]: g["preferredVersion"]["groupVersion"] for g in (await response.json())["groups"]}
        assert groups["helm.toolkit.fluxcd.io"] == "helm.toolkit.fluxcd.io/v2"
        assert groups["kustomize.toolkit.fluxcd.io"] == "kustomize.toolkit.fluxcd.io/v1"

        # The status subresource: the main endpoint ignores status, /status ignores the rest.
        path = f"{base}/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations"
        async with session.post(path, json={**KUSTOMIZATION, "status": {"lastAppliedRevision": "x"}}) as response:
            created = await response.json()
        assert "status" not in created, created
        assert created["metadata"]["generation"] == 1, created
        async with session.patch(f"{path}/backend/status", data=json.dumps(
                {"status": {"lastAppliedRevision": "main@sha1:abc"}, "spec": {"suspend": True}}),
                headers={"Content-Type": "application/merge-patch+json"}) as response:
            patched = await response.json()
        assert (patched["spec"]["suspend"], patched["status"], patched["metadata"]["generation"]) == \
            (False, {"lastAppliedRevision": "main@sha1:abc"}, 1)
        async with session.patch(f"{path}/backend", data=json.dumps(
                [{"op": "replace", "path": "/spec/suspend", "value": True}]),
                headers={"Content-Type": "application/json-patch+json"}) as response:
            patched = await response.json()
        assert (patched["spec"]["suspend"], patched["status"], patched["metadata"]["generation"]) == \
            (True, {"lastAppliedRevision": "main@sha1:abc"}, 2)
        async with session.patch(f"{path}/backend", data=json.dumps({"spec": {"suspend": False}}),
                                 headers={"Content-Type": "application/strategic-merge-patch+json"}) as response:
            refused: dict[str, Any] = await response.json()
        assert (response.status, refused["message"]) == (415, (
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"))


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTL_BINARIES)
async def test_kubectl_gets_and_patches_custom_resources(kubectl: Path, tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, aiohttp.ClientSession() as session:
        await install_crds(session, cluster.base_url)
        manifest = tmp_path / "app.json"
        manifest.write_text(json.dumps(APPLICATION))
        await ok(cluster, kubectl, "create", "-f", str(manifest))
        listed = await ok(cluster, kubectl, "get", "applications.argoproj.io", "-n", "default")
        assert listed.split("\n")[1].split()[0] == "backend", listed
        await ok(cluster, kubectl, "patch", "applications.argoproj.io", "backend", "-n", "default", "--type",
                 "merge", "-p", '{"spec":{"syncPolicy":{"automated":null}}}')
        got = json.loads(await ok(cluster, kubectl, "get", "app", "backend", "-n", "default", "-o", "json"))
        assert got["spec"]["syncPolicy"] == {}
        assert got["metadata"]["generation"] == 2, "Application has no status subresource: spec changes count"
        refused = await run_kubectl(kubectl, cluster.kubeconfig, "patch", "app", "backend", "-n", "default",
                                    "-p", '{"spec":{"project":"x"}}', home=cluster.home)
        assert refused.returncode != 0
        assert "application/strategic-merge-patch+json is not supported" in refused.stderr, refused.stderr
