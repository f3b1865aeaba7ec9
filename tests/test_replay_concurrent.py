"""`baseline: concurrent` in replay: the old pods measured at the same tick while kube-state-metrics
recorded any of them ready, the stable baseline once none was.

Three rollouts 20 minutes apart (the ReplicaSets of `tests/test_replay.py`); latency is 0.1 s, except
that from +10s to +2m of revision 2 a load spike makes *both* revisions' pods answer in 0.3 s. Revision
1's pods stay ready until +2m of revision 2 (`kube_replicaset_status_ready_replicas`). Compared with
the old pods at the same instant, revision 2 is no slower; compared with the stable baseline (revision
1 before the spike, 0.1 s), it is 200% slower, so `increase(latency) > 0.5` (`for: 0s`) would roll it
back at its first tick.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2ekit import rollguard_cli
from tests.test_replay import HASHES, NAME, NAMESPACE, SPACING, STEP, recorded_cluster

pytestmark = pytest.mark.prometheus

OVERLAP = 120
"""Seconds the previous revision's pods stay ready after the next rollout started."""


def latency(revision: int, after: int) -> float:
    """Seconds per request of revision 1..3's pods, `after` seconds into revision 2's rollout for both 1 and 2."""
    return 0.3 if revision in (1, 2) and 10 <= after < OVERLAP else 0.1


def write_history(path: Path, start: int) -> None:
    """OpenMetrics: each revision's latency while its pods serve, and its ready pods (kube-state-metrics)."""
    end = start + len(HASHES) * SPACING
    latencies, ready = [], []
    for index, hash_ in enumerate(HASHES):
        begin = start + index * SPACING
        serving_until = min(end, begin + SPACING + OVERLAP)
        spike_origin = start + SPACING  # revision 2's start
        for at in range(begin, serving_until, STEP):
            latencies.append(f'latency{{namespace="{NAMESPACE}",pod="{NAME}-{hash_}-x1"}} '
                             f"{latency(index + 1, at - spike_origin)} {at}")
        for at in range(begin, end, STEP):
            ready.append(f'kube_replicaset_status_ready_replicas{{namespace="{NAMESPACE}",'
                         f'replicaset="{NAME}-{hash_}"}} {1 if at < serving_until else 0} {at}')
    lines = ["# HELP latency Seconds per request.", "# TYPE latency gauge", *latencies,
             "# HELP kube_replicaset_status_ready_replicas Ready pods.",
             "# TYPE kube_replicaset_status_ready_replicas gauge", *ready, "# EOF"]
    path.write_text("\n".join(lines) + "\n")


POLICY = f"""\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata:
  name: web
spec:
  selector:
    namespaces: [{NAMESPACE}]
    matchLabels: {{app: {NAME}}}
  analysis:
    initialDelay: 30s
    interval: 15s
    bakeTime: 5m
  signals:
    latency:
      prometheus:
        query: 'max(latency{{namespace="{{{{namespace}}}}",pod=~"{{{{podPrefix}}}}.*"}})'
        baseline: concurrent
  rules:
    - name: slower-than-before
      when: "increase(latency) > 0.5"
      action: rollback
"""


@pytest.fixture(scope="module")
def spike_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The TSDB blocks of the history, and its start (epoch seconds)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (it comes with Debian's prometheus package: make prometheus)"
    root = tmp_path_factory.mktemp("spike-history")
    start = (int(time.time()) - 3 * 3600) // 60 * 60
    write_history(root / "history.om", start)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
                    str(root / "blocks")], check=True, capture_output=True, timeout=120)
    return root / "blocks", start


async def test_concurrent_baseline_compares_with_the_old_pods_while_they_were_ready(
        tmp_path: Path, spike_history: tuple[Path, int]) -> None:
    async with recorded_cluster(tmp_path, spike_history, POLICY) as world:
        code, out, err = await rollguard_cli(
            "replay", "--rules", str(world.rules), "--prometheus-url", world.prometheus_url,
            "--kubeconfig", str(world.kubeconfig), f"{NAMESPACE}/{NAME}", "-o", "json")
    assert code == 0, err
    document = json.loads(out)
    assert [(r["revision"], r["outcome"], r["rule"]) for r in document["rollouts"]] == [
        (1, "passed", None), (2, "passed", None), (3, "passed", None)], out
    spike = document["rollouts"][1]["ticks"]
    # While revision 1's pods were ready: measured at the same tick as revision 2's (both 0.3 in the spike);
    # after +2m none was: the stable baseline, revision 1 before revision 2 started (0.1).
    assert [(t["after"], t["values"]["latency"], t["baselines"]["latency"]) for t in spike[:8]] == [
        (30.0, 0.3, 0.3), (45.0, 0.3, 0.3), (60.0, 0.3, 0.3), (75.0, 0.3, 0.3), (90.0, 0.3, 0.3),
        (105.0, 0.3, 0.3), (120.0, 0.1, 0.1), (135.0, 0.1, 0.1)], out
