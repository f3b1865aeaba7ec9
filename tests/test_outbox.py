"""The outbox against the simulated API server: a delivered entry is cleared without overwriting a
concurrent save; one that was not delivered stays; only a leader sends entries again."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from daemon.clock import FakeClock
from daemon.kube.client import KubeClient, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.owed import Owed
from daemon.kube.state import STATE_ANNOTATION, AnalysisState
from daemon.notify.model import Alert, AlertKind
from daemon.outbox import Outbox
from daemon.writer import ClusterWriter
from sim.faults import FaultRule, Faults
from sim.resources import EVENTS
from tests.simkit import deployment_manifest, sim_server
from tests.test_notify_kit import make_alert

PATH = api_path("apps/v1", "deployments", "default", "web")


class Alerts:
    """Stands in for the pipeline: records what is submitted; `outcome` settles every alert."""

    def __init__(self) -> None:
        self.submitted: list[Alert] = []
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def submit(self, alert: Alert) -> bool:
        self.submitted.append(alert)
        return True

    def carries(self, alert: Alert) -> bool:
        return True

    async def settled(self, alert: Alert, *, timeout: float) -> bool:
        return await asyncio.shield(self.outcome)


async def stored(kube: KubeClient) -> dict[str, object]:
    deployment = await kube.get(PATH)
    return json.loads(deployment["metadata"]["annotations"][STATE_ANNOTATION])  # type: ignore[no-any-return]


async def test_a_delivered_entry_is_cleared_and_a_concurrent_save_survives(tmp_path: Path) -> None:
    faults = Faults()
    async with sim_server(tmp_path, faults=faults) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await kube.create(api_path("apps/v1", "deployments", "default"), deployment_manifest())
        writer = ClusterWriter(kube, EventRecorder(kube, clock=FakeClock()))
        alerts = Alerts()
        outbox = Outbox(kube, writer, alerts)
        alert = make_alert(AlertKind.REVIEW_NEEDED, namespace="default", deployment="web")
        outbox.add("default", "web", alert, approve=True, reason="ReviewRequested", warning=True)
        state = AnalysisState(revision=7, pod_template_hash="a", phase="review",
                              outbox=outbox.entries("default", "web"))
        await writer.save_state("default", "web", state)
        outbox.watch("default", "web", alert)
        assert [e["kind"] for e in (await stored(kube))["outbox"]] == ["review_needed"]  # type: ignore[union-attr]

        # The outbox's write is held back while the analysis saves its own (newer) state.
        faults.add(FaultRule(verb="patch", resource="deployments", code=0, latency=0.5))
        alerts.outcome.set_result(True)
        await asyncio.sleep(0.2)
        await writer.save_state("default", "web", replace(state, phase="rolling-back"))
        await outbox.drain()

        body = await stored(kube)
        assert "outbox" not in body, body
        assert body["phase"] == "rolling-back", "the concurrent save was overwritten"
        assert [r.code for r in cluster.audit if r.verb == "patch"][-2:] == [409, 200], \
            [(r.verb, r.code) for r in cluster.audit]
        assert outbox.entries("default", "web") == ()


async def test_an_entry_that_was_not_delivered_stays_and_only_a_leader_sends_it_again(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        await kube.create(api_path("apps/v1", "deployments", "default"), deployment_manifest())
        leading = False
        writer = ClusterWriter(kube, EventRecorder(kube, clock=FakeClock()), lease=lambda margin: leading)
        alerts = Alerts()
        outbox = Outbox(kube, writer, alerts)
        entry = Owed(kind="rollback_started", revision=7, hash="a", at=1_796_000_000.0,
                     title="Rolled back default/web from revision 7 to revision 6", summary="Trigger: error-rate",
                     rule="error-rate", action="rollback", reason="RolledBack", warning=True)
        state = AnalysisState(revision=8, pod_template_hash="b", outbox=(entry,))
        deployment = await kube.get(PATH)

        await outbox.resend(deployment, state, policy="web-policy")
        assert alerts.submitted == [], "a follower sends nothing"

        leading = True
        await outbox.resend(deployment, state, policy="web-policy")
        alerts.outcome.set_result(False)  # stopped before delivery
        await outbox.drain()
        (alert,) = alerts.submitted
        assert (alert.kind, alert.revision, alert.rollout_key, alert.title, alert.policy) == (
            AlertKind.ROLLBACK_STARTED, 7, "default/web/7", "Rolled back default/web from revision 7 to revision 6",
            "web-policy")
        assert alert.evidence[0].startswith(
            "Sent again: rollguard decided this at 2026-11-30T00:53:20Z and restarted"), alert.evidence
        # Its Event too: the process that decided may have died before recording it.
        (event,) = [e for e in cluster.store.list_objects(EVENTS, "default")[0] if e.get("reason") == "RolledBack"]
        assert (event["type"], event["message"]) == (
            "Warning", "Rolled back default/web from revision 7 to revision 6: Trigger: error-rate"), event
        # Not delivered: still owed, and kept by every save.
        assert outbox.entries("default", "web") == (entry,)
        # A later successor sends it again, but the Event, named after the entry, is recorded once: the
        # audit trail keeps the decision where it was.
        later = Outbox(kube, writer, alerts)
        await later.resend(deployment, state, policy="web-policy")
        await later.drain()
        assert len(alerts.submitted) == 2
        assert [e["metadata"]["name"] for e in cluster.store.list_objects(EVENTS, "default")[0]
                if e.get("reason") == "RolledBack"] == [entry.event_name("web")]
