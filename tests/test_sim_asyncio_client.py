"""kubernetes_asyncio, unchanged, against the simulated API server: lists, watches, writes, events, leases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from sim.resources import DEPLOYMENTS, LEASES
from tests.simkit import SimCluster, deployment_manifest, sim_server

NS = "default"


@contextlib.asynccontextmanager
async def api_client(cluster: SimCluster) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration=configuration) as api:
        yield api


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimCluster]:
    async with sim_server(tmp_path) as running:
        yield running


async def test_list_watch_and_resume_without_gaps_or_duplicates(cluster: SimCluster) -> None:
    async with api_client(cluster) as api:
        apps = client.AppsV1Api(api)
        await apps.create_namespaced_deployment(NS, deployment_manifest("web"))
        listed = await apps.list_namespaced_deployment(NS)
        assert [d.metadata.name for d in listed.items] == ["web"]
        list_rv = listed.metadata.resource_version

        # Changes made while nobody watches are replayed from the list's resourceVersion.
        await apps.create_namespaced_deployment(NS, deployment_manifest("api"))
        await apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
        seen: list[tuple[str, str, int]] = []
        last_rv = list_rv
        async with watch.Watch() as stream:
            async for event in stream.stream(apps.list_namespaced_deployment, NS, resource_version=list_rv,
                                             timeout_seconds=1):
                obj = event["object"]
                seen.append((event["type"], obj.metadata.name, obj.spec.replicas))
                last_rv = obj.metadata.resource_version
        assert seen == [("ADDED", "api", 3), ("MODIFIED", "web", 5)]

        # Resume from the last event seen: only what came after it, once.
        await apps.delete_namespaced_deployment("api", NS)
        await apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 1}})
        resumed: list[tuple[str, str]] = []

        async def change_while_watching() -> None:
            await asyncio.sleep(0.2)
            await apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"live": "yes"}}})

        changer = asyncio.create_task(change_while_watching())
        async with watch.Watch() as stream:
            async for event in stream.stream(apps.list_namespaced_deployment, NS, resource_version=last_rv,
                                             timeout_seconds=1):
                resumed.append((event["type"], event["object"].metadata.name))
        await changer
        assert resumed == [("DELETED", "api"), ("MODIFIED", "web"), ("MODIFIED", "web")]


async def test_too_old_resource_version_raises_410(tmp_path: Path) -> None:
    async with sim_server(tmp_path, history_size=3) as small, api_client(small) as api:
        core = client.CoreV1Api(api)
        first = await core.create_namespaced_config_map(NS, {"metadata": {"name": "c0"}})
        for index in range(1, 6):
            await core.create_namespaced_config_map(NS, {"metadata": {"name": f"c{index}"}})
        async def drain_watch() -> None:
            async with watch.Watch() as stream:
                async for _ in stream.stream(core.list_namespaced_config_map, NS,
                                             resource_version=first.metadata.resource_version, timeout_seconds=2):
                    pass

        with pytest.raises(ApiException) as caught:
            await drain_watch()
        assert caught.value.status == 410
        assert caught.value.reason.startswith("Expired: too old resource version: ")


async def test_replace_with_stale_resource_version_is_409(cluster: SimCluster) -> None:
    async with api_client(cluster) as api:
        apps = client.AppsV1Api(api)
        created = await apps.create_namespaced_deployment(NS, deployment_manifest("web"))
        await apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})
        created.spec.replicas = 7
        with pytest.raises(ApiException) as caught:
            await apps.replace_namespaced_deployment("web", NS, created)
        assert caught.value.status == 409
        assert '"reason":"Conflict"' in caught.value.body
        fresh = await apps.read_namespaced_deployment("web", NS)
        fresh.spec.replicas = 7
        replaced = await apps.replace_namespaced_deployment("web", NS, fresh)
        assert (replaced.spec.replicas, replaced.metadata.generation) == (7, 3)


async def test_patch_with_a_dict_is_a_strategic_merge(cluster: SimCluster) -> None:
    async with api_client(cluster) as api:
        apps = client.AppsV1Api(api)
        manifest = deployment_manifest("web")
        manifest["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
        await apps.create_namespaced_deployment(NS, manifest)
        patched = await apps.patch_namespaced_deployment(
            "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "shop/web:2.0"}]}}}})
        assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
            ("web", "shop/web:2.0"), ("sidecar", "envoy:1.30")]
        assert patched.metadata.generation == 2
        stored = cluster.store.get(DEPLOYMENTS, NS, "web")
        assert stored["spec"]["template"]["spec"]["containers"][1]["image"] == "envoy:1.30"
        status = await apps.patch_namespaced_deployment_status(
            "web", NS, {"status": {"observedGeneration": 2, "replicas": 0}})
        assert (status.status.observed_generation, status.metadata.generation) == (2, 2)


async def test_events_k8s_io_create_and_read(cluster: SimCluster) -> None:
    async with api_client(cluster) as api:
        apps = client.AppsV1Api(api)
        deploy = await apps.create_namespaced_deployment(NS, deployment_manifest("web"))
        events = client.EventsV1Api(api)
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="web.rollguard1"),
            event_time="2025-03-01T10:00:00.000001Z", reporting_controller="rollguard.io/rollguard",
            reporting_instance="rollguard-0", action="Rollback", reason="RolledBack", type="Warning",
            note="error ratio 12% > 5% for 2m: rolled back to revision 3",
            regarding=client.V1ObjectReference(kind="Deployment", namespace=NS, name="web",
                                               uid=deploy.metadata.uid, api_version="apps/v1"))
        created = await events.create_namespaced_event(NS, body)
        assert created.metadata.resource_version
        read = await events.read_namespaced_event("web.rollguard1", NS)
        assert (read.note, read.regarding.uid, read.event_time.microsecond) == (
            "error ratio 12% > 5% for 2m: rolled back to revision 3", deploy.metadata.uid, 1)
        core = client.CoreV1Api(api)
        listed = await core.list_namespaced_event(NS, field_selector=f"involvedObject.uid={deploy.metadata.uid}")
        assert [(e.reason, e.message, e.reporting_component) for e in listed.items] == [
            ("RolledBack", "error ratio 12% > 5% for 2m: rolled back to revision 3", "rollguard.io/rollguard")]
        v1_listed = await events.list_namespaced_event(NS, field_selector="regarding.name=web")
        assert [e.metadata.name for e in v1_listed.items] == ["web.rollguard1"]


async def test_leader_election_with_a_lease(cluster: SimCluster) -> None:
    async with api_client(cluster) as api_a, api_client(cluster) as api_b:
        leading: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
        someone_leads = asyncio.Event()

        def candidate(identity: str, api: client.ApiClient) -> leaderelection.LeaderElection:
            async def started() -> None:
                leading[identity].set()
                someone_leads.set()

            async def stopped() -> None:
                leading[identity].clear()

            lock = LeaseLock("rollguard-leader", NS, identity, api)
            return leaderelection.LeaderElection(electionconfig.Config(
                lock, lease_duration=4, renew_deadline=3, retry_period=1,
                onstarted_leading=started, onstopped_leading=stopped))

        tasks = [asyncio.create_task(candidate(name, api).run(), name=f"elect-{name}")
                 for name, api in (("a", api_a), ("b", api_b))]
        try:
            await asyncio.wait_for(someone_leads.wait(), 10)
            lease_before = cluster.store.get(LEASES, NS, "rollguard-leader")
            await asyncio.sleep(1.6)  # longer than retry_period: one renewal
            lease_after = cluster.store.get(LEASES, NS, "rollguard-leader")
            winners = [name for name, flag in leading.items() if flag.is_set()]
            assert len(winners) == 1, f"exactly one leader, not {winners}"
            spec: dict[str, Any] = lease_after["spec"]
            assert spec["holderIdentity"] == winners[0]
            assert spec["leaseDurationSeconds"] == 4
            assert spec["renewTime"] > lease_before["spec"]["renewTime"], "the leader renews its lease"
            assert spec["acquireTime"] == lease_before["spec"]["acquireTime"]
            assert spec["renewTime"].endswith("Z")
            assert len(spec["renewTime"]) == len("2025-03-01T10:00:00.000000Z")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

