"""The daemon's own HTTP endpoints, as the kubelet's probes, Prometheus and an SRE's curl see them.

Two daemons with leader election run against one stack. The leader starts with its API path frozen
(requests accepted, never answered: `tests/frontdoor.py`), so "not ready before the first list" is
observed for sure rather than raced.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sim.demo.manifests import backend_service
from sim.demo.stack import running_stack
from sim.workload import WorkloadLogs
from tests.e2ekit import RULES, deploy, eventually, image_of, rollout_status, state_of
from tests.replicakit import FrontDoor, Replica, holder, replica

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(90)]


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def poll(session: aiohttp.ClientSession, url: str, *, until: int, timeout: float = 10) -> tuple[int, str]:
    """GET `url` until it answers status `until` (connection refused while the daemon starts is fine)."""
    deadline = asyncio.get_running_loop().time() + timeout
    answer = (0, "no answer")
    while asyncio.get_running_loop().time() < deadline:
        try:
            answer = await get(session, url)
        except aiohttp.ClientConnectionError as exc:
            answer = (0, repr(exc))
        if answer[0] == until:
            break
        await asyncio.sleep(0.05)
    return answer


def sample(metrics: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in the Prometheus text format (None when absent)."""
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", metrics, flags=re.MULTILINE)
    return None if match is None else float(match.group(1))


async def analyses(session: aiohttp.ClientSession, daemon: Replica) -> list[dict[str, Any]]:
    async with session.get(f"{daemon.url}/api/v1/analyses") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    found: list[dict[str, Any]] = body["analyses"]
    return found


async def test_health_readiness_metrics_and_analyses_of_a_leader_and_a_follower(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES, leader_election=True, start_daemon=False) as stack, \
            FrontDoor(stack.cluster.store, tmp_path, logs=WorkloadLogs(stack.cluster.store, stack.cluster.clock)) \
            as door, aiohttp.ClientSession() as http:
        door.freeze()
        async with replica(stack, "rollguard-0", kubeconfig=door.kubeconfig) as leader:
            assert await poll(http, f"{leader.url}/healthz", until=200) == (200, "ok\n"), "alive while the API hangs"
            status, reason = await get(http, f"{leader.url}/readyz")
            assert (status, reason) == (503, "waiting for the first list of Deployments and ReplicaSets\n")

            door.thaw()
            await eventually(lambda: holder(stack) == "rollguard-0", timeout=10, what="rollguard-0 to lead")
            assert await poll(http, f"{leader.url}/readyz", until=200) == (200, "ok\n")

            async with replica(stack, "rollguard-1") as follower:
                assert await poll(http, f"{follower.url}/readyz", until=200) == (200, "ok (follower)\n"), (
                    "a synced standby is ready, and says so")

                await stack.apply(backend_service())
                await deploy(stack, "backend:v1")
                await rollout_status(stack)
                await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")

                live: list[dict[str, Any]] = []
                for _ in range(200):
                    live = [a for a in await analyses(http, leader)
                            if a["revision"] == 2 and a["evaluations"] > 0 and a["values"]]
                    if live or image_of(stack) == "backend:v1":
                        break
                    await asyncio.sleep(0.1)
                assert live, "the leader's /api/v1/analyses never showed revision 2 being evaluated"
                analysis = live[0]
                assert (analysis["namespace"], analysis["deployment"], analysis["phase"]) == (
                    "staging", "backend", "analysing"), analysis
                assert analysis["policy"] == "backend-staging-fast"
                assert analysis["values"]["error_rate"] == pytest.approx(0.12, abs=0.06), analysis["values"]
                assert await analyses(http, follower) == [], "a follower analyses nothing"

                await eventually(lambda: image_of(stack) == "backend:v1", timeout=60,
                                 what="rollguard-0 to roll backend back")
                await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30,
                                 what="the rollback to complete")
                status, metrics = await get(http, f"{leader.url}/metrics")
                assert status == 200
                assert sample(metrics, "rollguard_rollbacks_total", '{result="executed"}') == 1.0
                assert (sample(metrics, "rollguard_evaluations_total") or 0) > 0
                assert sample(metrics, "rollguard_analyses_active") == 0.0, "every analysis has ended"
                assert sample(metrics, "rollguard_is_leader") == 1.0
                # The collector's own figures (full collections: generation 2), for the CPU they cost.
                assert sample(metrics, "python_gc_collections_total", '{generation="2"}') is not None
                assert sample(metrics, "rollguard_verdicts_total", '{action="rollback"}') == 1.0

                _, metrics = await get(http, f"{follower.url}/metrics")
                assert sample(metrics, "rollguard_is_leader") == 0.0
                assert sample(metrics, "rollguard_rollbacks_total", '{result="executed"}') is None
                assert sample(metrics, "rollguard_evaluations_total") == 0.0

                finished = [a for a in await analyses(http, leader) if a["revision"] == 2]
                assert finished, "a finished analysis stays listed"
                assert finished[0]["verdict"]["action"] == "rollback", finished[0]
