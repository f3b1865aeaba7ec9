"""`baseline: concurrent` once the previous revision's pods are gone: the stable baseline, saying so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from daemon.clock import FakeClock
from daemon.kube.client import KubeError
from daemon.kube.rollout_state import RolloutId
from daemon.measure import ProviderMeasurer
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rollout import Rollout
from daemon.rules.loader import load_file

POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {name: slow}
spec:
  selector: {namespaces: [staging]}
  signals:
    p95_latency: {prometheus: {query: "histogram_quantile(0.95, rate(x[2m]))", baseline: concurrent}}
  rules:
    - {name: slow, when: "increase(p95_latency) > 0.5", action: review}
"""
NEW = SignalContext("staging", "backend", 5, "h5", "backend-h5-", {}, 0.0)
OLD = SignalContext("staging", "backend", 4, "h4", "backend-h4-", {}, 0.0)
STABLE = Measurement(Phase.OK, 0.2, "revision 3, the last that passed its analysis: 0.2", details={"revision": 3.0})


class ReplicaSets:
    """The Kubernetes API as far as the measurer asks it: the old ReplicaSet by its hash."""

    def __init__(self, answer: list[dict[str, Any]] | KubeError) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def list(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.asked.append((path, dict(params or {})))
        if isinstance(self.answer, KubeError):
            raise self.answer
        return {"items": self.answer}


async def concurrent_baselines(tmp_path: Path, kube: ReplicaSets) -> dict[str, Measurement]:
    path = tmp_path / "slow.yaml"
    path.write_text(POLICY)
    policy = load_file(path).policies[0]
    rollout = Rollout(RolloutId("staging", "backend", 5, "h5"), policy, NEW, OLD, 0.0)
    async with aiohttp.ClientSession() as session:
        measurer = ProviderMeasurer(prometheus_url="http://127.0.0.1:9", kube=kube,  # type: ignore[arg-type]
                                    session=session, proxy=None, clock=FakeClock())
        try:
            return await measurer.measure_concurrent(rollout, {"p95_latency": STABLE})
        finally:
            await measurer.close()


async def test_with_no_old_pod_ready_the_stable_baseline_is_used_and_said_so(tmp_path: Path) -> None:
    kube = ReplicaSets([{"metadata": {"name": "backend-h4"}, "status": {"replicas": 0, "readyReplicas": 0}}])
    baselines = await concurrent_baselines(tmp_path, kube)
    assert kube.asked == [("/apis/apps/v1/namespaces/staging/replicasets", {"labelSelector": "pod-template-hash=h4"})]
    assert baselines == {"p95_latency": Measurement(
        Phase.OK, 0.2, "no pod of revision 4 is ready any more (rollout complete); stable baseline instead: "
                       "revision 3, the last that passed its analysis: 0.2", details={"revision": 3.0})}


async def test_an_unreadable_old_replica_set_falls_back_to_stable_with_the_reason(tmp_path: Path) -> None:
    baselines = await concurrent_baselines(tmp_path, ReplicaSets(KubeError("HTTP 403: forbidden")))
    assert baselines["p95_latency"].value == 0.2
    assert baselines["p95_latency"].message == (
        "cannot read the previous revision's ReplicaSet: HTTP 403: forbidden; stable baseline instead: "
        "revision 3, the last that passed its analysis: 0.2")
