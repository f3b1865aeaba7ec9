"""The one writer: dry-run and leadership are checked at the moment of each write, against the
simulated API server over HTTP (its audit log says what reached it)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from daemon.clock import FakeClock, ScaledClock
from daemon.kube.client import KubeClient, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.leader import LeaderElector, LeaseConfig
from daemon.kube.state import AnalysisState
from daemon.writer import ClusterWriter, NotWriting
from sim.apiserver import AuditRecord
from sim.faults import FaultRule, Faults
from sim.resources import EVENTS
from tests.simkit import deployment_manifest, sim_server

DURATION, DEADLINE, RETRY = 15.0, 10.0, 1.0


class StallableClock(FakeClock):
    def stall(self, seconds: float) -> None:
        """Time passes while the event loop is blocked: nobody is woken (no renewal runs)."""
        self._now += seconds


def writes(audit: list[AuditRecord]) -> list[str]:
    """Every write that reached the API server, leases aside."""
    return [f"{r.verb} {r.resource}/{r.name}" for r in audit
            if r.verb not in ("get", "list", "watch") and r.resource != "leases"]


async def test_a_leader_whose_lease_ends_within_the_margin_writes_nothing(tmp_path: Path) -> None:
    """Finding 9: leadership was a flag read once; an event-loop stall let a deposed leader write."""
    clock = StallableClock()
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await kube.create(api_path("apps/v1", "deployments", "default"), deployment_manifest())
        elector = LeaderElector(kube, LeaseConfig("rollguard", "default", "me", lease_duration=DURATION,
                                                  renew_deadline=DEADLINE, retry_period=RETRY), clock=clock)
        task = asyncio.create_task(elector.run())
        try:
            for _ in range(200):
                if elector.is_leader:
                    break
                await asyncio.sleep(0.01)
            assert elector.is_leader
            writer = ClusterWriter(kube, EventRecorder(kube, clock=clock), lease=elector.holds_lease, margin=2.0)
            await writer.save_state("default", "web", AnalysisState(revision=1, pod_template_hash="a"))
            before = writes(cluster.audit)
            assert before[-1] == "patch deployments/web", before

            clock.stall(DEADLINE - 1.0)  # the loop was blocked: no renewal for 9 of the 10 s
            assert elector.is_leader, "the flag alone still says leader: that is the trap"
            with pytest.raises(NotWriting, match="lease ends within 2s"):
                await writer.save_state("default", "web", AnalysisState(revision=2, pod_template_hash="b"))
            await writer.event(deployment_manifest(), type_="Normal", reason="X", message="m")
            assert writes(cluster.audit) == before, "nothing may reach the API server"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_dry_run_writes_nothing_at_all(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await kube.create(api_path("apps/v1", "deployments", "default"), deployment_manifest())
        before = writes(cluster.audit)
        writer = ClusterWriter(kube, EventRecorder(kube, dry_run=True), dry_run=True)
        with pytest.raises(NotWriting, match="dry run"):
            await writer.save_state("default", "web", AnalysisState())
        with pytest.raises(NotWriting, match="dry run"):
            await writer.clear_annotations("default", "web", ("rollguard.io/approve",))
        await writer.event(deployment_manifest(), type_="Normal", reason="X", message="m")
        assert writes(cluster.audit) == before


async def test_an_event_the_api_server_refuses_for_a_moment_is_recorded_on_a_retry(tmp_path: Path) -> None:
    # Fault schedule seed 39: two 500s on Event creation and the rollback's RolledBack Event was gone —
    # a decision with no trace in `kubectl describe`. client-go's recorder retries too.
    faults = Faults()
    async with sim_server(tmp_path, faults=faults) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        deployment = await kube.create(api_path("apps/v1", "deployments", "default"), deployment_manifest())
        faults.add(FaultRule(verb="create", resource="events", code=500, count=2))
        writer = ClusterWriter(kube, EventRecorder(kube, clock=ScaledClock(100.0)))  # backoff 100x faster
        await writer.event(deployment, type_="Warning", reason="RolledBack", message="Rolled back default/web")
        events = [e for e in cluster.store.list_objects(EVENTS, "default")[0] if e.get("reason") == "RolledBack"]
        assert [e["message"] for e in events] == ["Rolled back default/web"]
        assert [r.code for r in cluster.audit if r.resource == "events"] == [500, 500, 201]
