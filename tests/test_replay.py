"""`rollguard replay` on real history: a Prometheus TSDB made by promtool, ReplicaSets in the simulated cluster.

The history (3 hours ago, within the test Prometheus' 1-day retention), one sample every 5 s:

* revision 1 (`web-aaa`), good: error ratio 0 for 20 minutes;
* revision 2 (`web-bbb`), good with a blip: 0, except 0.2 from +2m to +2m30s;
* revision 3 (`web-ccc`), bad: 0 for the first minute, then 0.3 until the end.

The policy ticks at +30s, +45s, +1m, …; `error_ratio > 0.05` with `for: 1m` must roll back revision 3
at +2m (first true at +1m) and pass the blip; with `for: 0s` it rolls back the blip at +2m and the bad
deploy at +1m.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.replay import engine
from daemon.replay.command import Options, replay
from daemon.replay.report import as_json, as_text
from sim.prometheus import PrometheusServer
from sim.resources import DEPLOYMENTS, NAMESPACES, REPLICASETS
from tests.e2ekit import rollguard_cli
from tests.simkit import sim_server

pytestmark = pytest.mark.prometheus

NAMESPACE, NAME = "shop", "web"
HASHES = ("aaa", "bbb", "ccc")
STEP = 5
SPACING = 20 * 60
"""Seconds between the three rollouts."""


def error_ratio(revision: int, after: int) -> float:
    """The error ratio of revision 1..3 `after` seconds into its rollout."""
    if revision == 2:
        return 0.2 if 120 <= after < 150 else 0.0
    if revision == 3:
        return 0.3 if after >= 60 else 0.0
    return 0.0


def write_history(path: Path, start: int) -> None:
    """OpenMetrics for `promtool tsdb create-blocks-from openmetrics`: one gauge series per revision's pod."""
    lines = ["# HELP error_ratio Share of failed requests.", "# TYPE error_ratio gauge"]
    for index, hash_ in enumerate(HASHES):
        begin = start + index * SPACING
        for after in range(0, SPACING, STEP):
            lines.append(f'error_ratio{{namespace="{NAMESPACE}",pod="{NAME}-{hash_}-x1"}} '
                         f"{error_ratio(index + 1, after)} {begin + after}")
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


def policy(for_: str) -> str:
    return f"""\
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
    error_ratio:
      prometheus:
        query: 'max(error_ratio{{namespace="{{{{namespace}}}}",pod=~"{{{{podPrefix}}}}.*"}})'
  rules:
    - name: error-ratio-over-5pct
      when: "error_ratio > 0.05"
      for: {for_}
      action: rollback
"""


def template(hash_: str, revision: int) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": NAME, "pod-template-hash": hash_}},
            "spec": {"containers": [{"name": "web", "image": f"shop/web:1.{revision}"}]}}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The TSDB blocks of the history, and its start (epoch seconds)."""
    import time

    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (it comes with Debian's prometheus package: make prometheus)"
    root = tmp_path_factory.mktemp("history")
    start = (int(time.time()) - 3 * 3600) // 60 * 60
    write_history(root / "history.om", start)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
                    str(root / "blocks")], check=True, capture_output=True, timeout=120)
    return root / "blocks", start


@asynccontextmanager
async def recorded_cluster(tmp_path: Path, history: tuple[Path, int], rules_text: str, *,
                           present: tuple[str, ...] = HASHES,
                           renumbered: dict[str, tuple[int, str]] | None = None) -> AsyncIterator[World]:
    """The simulated cluster with the ReplicaSets in `present` (default: the three), a Prometheus on the
    history, and the rules directory. `renumbered`: hash → (revision, revision-history) of a ReplicaSet an
    undo re-used (default: the n-th is revision n)."""
    blocks, start = history
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "web.yaml").write_text(rules_text)
    clock = FakeClock(start=float(start))
    sd_file = tmp_path / "targets.json"
    sd_file.write_text("[]")
    async with sim_server(tmp_path, clock=clock) as cluster, PrometheusServer(sd_file, scrape_interval=1) as prom:
        # Prometheus loads blocks found in its data directory when it starts.
        await prom.stop()
        shutil.copytree(blocks, prom.workdir / "data", dirs_exist_ok=True)
        await prom.start()
        store = cluster.store
        store.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        deployment = store.create(DEPLOYMENTS, {
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app": NAME},
                         "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}}, "template": template("ccc", 3)}})
        for index, hash_ in enumerate(HASHES):
            # The store stamps creationTimestamp from its clock: each ReplicaSet is created at its rollout's start.
            await clock.advance(float(start + index * SPACING) - clock.now())
            if hash_ not in present:
                continue  # pruned by the controller (revisionHistoryLimit)
            store.create(REPLICASETS, {
                "metadata": {"name": f"{NAME}-{hash_}", "namespace": NAMESPACE,
                             "labels": {"app": NAME, "pod-template-hash": hash_},
                             "annotations": annotations(hash_, index + 1, renumbered or {}),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                                                  "uid": deployment["metadata"]["uid"], "controller": True}]},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME, "pod-template-hash": hash_}},
                         "template": template(hash_, index + 1)}})
        yield World(rules, prom.url, cluster.kubeconfig)


def annotations(hash_: str, revision: int, renumbered: dict[str, tuple[int, str]]) -> dict[str, str]:
    if hash_ not in renumbered:
        return {"deployment.kubernetes.io/revision": str(revision)}
    current, earlier = renumbered[hash_]
    return {"deployment.kubernetes.io/revision": str(current), "deployment.kubernetes.io/revision-history": earlier}


@dataclass(frozen=True)
class World:
    rules: Path
    prometheus_url: str
    kubeconfig: Path


async def replay_with(tmp_path: Path, history: tuple[Path, int], for_: str) -> tuple[dict[str, Any], str]:
    async with recorded_cluster(tmp_path, history, policy(for_)) as world:
        replays, notes = await replay(Options(world.rules, world.prometheus_url, ((NAMESPACE, NAME),), None, (),
                                              world.kubeconfig))
    return as_json(replays, notes=notes), as_text(replays, notes=notes)


def outcomes(document: dict[str, Any]) -> list[tuple[int, str, float | None, str | None]]:
    return [(r["revision"], r["outcome"], r["after"], r["rule"]) for r in document["rollouts"]]


async def test_for_1m_rolls_back_the_bad_deploy_at_the_right_tick_and_passes_the_blip(
        tmp_path: Path, history: tuple[Path, int]) -> None:
    document, text = await replay_with(tmp_path, history, "1m")
    assert outcomes(document) == [
        (1, "passed", 300.0, None),
        (2, "passed", 300.0, None),
        (3, "rolled back", 120.0, "error-ratio-over-5pct"),
    ], text
    bad = document["rollouts"][2]
    assert bad["message"] == ("error-ratio-over-5pct: error_ratio > 0.05 held for 1m (error_ratio=0.3)"), text
    assert [t["values"]["error_ratio"] for t in bad["ticks"]] == [0.0, 0.0, 0.3, 0.3, 0.3, 0.3, 0.3], text
    assert document["summary"] == {"rolled back": 1, "reviewed": 0, "notified": 0, "passed": 2, "unknown": 0}
    blip = document["rollouts"][1]
    assert [t["rules"]["error-ratio-over-5pct"] for t in blip["ticks"]][5:9] == [
        "clear", "pending", "pending", "clear"], text
    assert "shop/web revision 3 (shop/web:1.3)" in text
    assert "  would have rolled back at +2m by rule error-ratio-over-5pct\n" in text
    assert "rolled back   1\n" in text
    json.dumps(document)


async def test_for_0s_rolls_back_the_blip_too(tmp_path: Path, history: tuple[Path, int]) -> None:
    document, text = await replay_with(tmp_path, history, "0s")
    assert outcomes(document) == [
        (1, "passed", 300.0, None),
        (2, "rolled back", 120.0, "error-ratio-over-5pct"),
        (3, "rolled back", 60.0, "error-ratio-over-5pct"),
    ], text
    assert document["rollouts"][1]["message"] == "error-ratio-over-5pct: error_ratio > 0.05 held (error_ratio=0.2)"


HEALTH_SIGNAL = """\
    health:
      http:
        url: "http://web.{{namespace}}:8000/health"
        expectStatus: 200
  rules:
    - name: health-down
      when: "!health.ok"
      action: rollback
"""


async def test_cli_says_unknown_for_rules_on_signals_that_cannot_be_replayed_and_draws_the_html_report(
        tmp_path: Path, history: tuple[Path, int]) -> None:
    rules_text = policy("1m").replace("  rules:\n", HEALTH_SIGNAL, 1)
    async with recorded_cluster(tmp_path, history, rules_text) as world:
        code, out, err = await rollguard_cli(
            "replay", "--rules", str(world.rules), "--prometheus-url", world.prometheus_url,
            "--kubeconfig", str(world.kubeconfig), f"{NAMESPACE}/{NAME}", "-o", "json",
            "--html", str(tmp_path / "report.html"))
    assert code == 0, err
    document = json.loads(out)
    assert outcomes(document) == [
        (1, "unknown", None, None),
        (2, "unknown", None, None),
        (3, "rolled back", 120.0, "error-ratio-over-5pct"),
    ], out
    assert document["rollouts"][0]["message"] == (
        "nothing fired, but health-down could not be judged: health is not replayable"), out
    assert document["rollouts"][0]["notReplayable"] == {"health": "an HTTP check can only be made now"}
    assert document["rollouts"][2]["unknownRules"] == ["health-down"]
    assert document["summary"] == {"rolled back": 1, "reviewed": 0, "notified": 0, "passed": 0, "unknown": 2}
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 3, html  # one error_ratio chart per rollout; health has none
    assert "health: not replayable (an HTTP check can only be made now)" in html
    assert "<b>rolled back</b> at +2m by rule error-ratio-over-5pct" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', ""), "the report fetches nothing"


async def test_an_analysis_held_open_is_replayed_up_to_a_day_after_its_start_not_to_the_present(
        tmp_path: Path, history: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # The history is hours old, not days: the horizon is made ten minutes to see where the replay stops.
    monkeypatch.setattr(engine, "HORIZON", 600.0)
    rules_text = policy("1m").replace("max(error_ratio{", "max(gone{", 1)
    async with recorded_cluster(tmp_path, history, rules_text) as world:
        replays, _ = await replay(Options(world.rules, world.prometheus_url, ((NAMESPACE, NAME),), None, (),
                                          world.kubeconfig))
    latest = as_json(replays)["rollouts"][2]
    # No data: the rule is held and holds the bake time open; the daemon would go on, replay stops.
    assert (latest["outcome"], latest["at"], latest["message"]) == (
        "unknown", None, "still analysing 10m after its start, where replay stops (39 evaluations, no rule fired)")
    assert [t["after"] for t in latest["ticks"]] == [30.0 + 15 * n for n in range(39)]
