"""A state save the API server refuses for a moment (429, 5xx) is tried again; a refusal that will not
pass (409, 403) is not. Against the simulated API server, with its fault injection."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.clock import ScaledClock
from daemon.decisions import SAVE_RETRY_DELAYS, Decisions
from daemon.kube.client import KubeClient, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.state import STATE_ANNOTATION, AnalysisState
from daemon.writer import ClusterWriter
from sim.faults import FaultRule, Faults
from tests.simkit import deployment_manifest, sim_server
from tests.test_analysis_schedule import make_rollout
from tests.test_outbox import Alerts

PATH = api_path("apps/v1", "deployments", "ns", "web")


async def created(kube: KubeClient) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}
    await kube.create(api_path("v1", "namespaces"), namespace)
    await kube.create(api_path("apps/v1", "deployments", "ns"), deployment_manifest("web"))


async def stored_phase(kube: KubeClient) -> str | None:
    annotations = (await kube.get(PATH))["metadata"].get("annotations") or {}
    if STATE_ANNOTATION not in annotations:
        return None
    return str(json.loads(annotations[STATE_ANNOTATION])["phase"])


async def test_a_save_refused_with_429_and_503_is_stored_on_a_later_attempt(tmp_path: Path) -> None:
    faults = Faults()
    async with sim_server(tmp_path, faults=faults) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await created(kube)
        clock = ScaledClock(50.0)  # the retry delays pass 50 times faster
        writer = ClusterWriter(kube, EventRecorder(kube, clock=clock))
        decisions = Decisions(kube, writer, Alerts(), clock=clock)
        refusals = len(SAVE_RETRY_DELAYS)  # every retry but the last is refused
        faults.add(FaultRule(verb="patch", resource="deployments", code=429, retry_after=0, count=refusals - 1))
        faults.add(FaultRule(verb="patch", resource="deployments", code=503, count=1))

        await decisions.save(make_rollout(for_=0), AnalysisState(revision=2, pod_template_hash="abc", phase="review"))

        assert await stored_phase(kube) == "review"
        assert [r.code for r in cluster.audit if r.verb == "patch"] == [429] * (refusals - 1) + [503, 200]


async def test_a_save_refused_every_time_or_with_409_gives_up(tmp_path: Path) -> None:
    faults = Faults()
    async with sim_server(tmp_path, faults=faults) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await created(kube)
        clock = ScaledClock(50.0)
        writer = ClusterWriter(kube, EventRecorder(kube, clock=clock))
        decisions = Decisions(kube, writer, Alerts(), clock=clock)

        faults.add(FaultRule(verb="patch", resource="deployments", code=500, count=100))
        await decisions.save(make_rollout(for_=0), AnalysisState(revision=2, pod_template_hash="abc", phase="review"))
        assert await stored_phase(kube) is None
        assert [r.code for r in cluster.audit if r.verb == "patch"] == [500] * (len(SAVE_RETRY_DELAYS) + 1)

        faults.clear()
        faults.add(FaultRule(verb="patch", resource="deployments", code=409, count=100))
        await decisions.save(make_rollout(for_=0), AnalysisState(revision=2, pod_template_hash="abc", phase="review"))
        assert await stored_phase(kube) is None
        assert [r.code for r in cluster.audit if r.verb == "patch"][-2:] == [500, 409], "a conflict is not retried"
