"""`rollguard replay` against the demo's cluster: the verdicts the daemon announced for v1–v6, replayed.

The demo's own code plays its first six steps (`sim.demo.run.Demo.run_step`, fast timings, the demo's
rules); then the real CLI replays the Deployment's history from the cluster and Prometheus with the same
rules, and its outcomes are compared with the daemon's Events. About 100 s (the steps play in real
time: Prometheus scrapes real time), so it runs in the parallel pass.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sim.demo.gitops_step import GITOPS_LIMITS, use_suspend
from sim.demo.manifests import backend_service
from sim.demo.run import Demo, Timeline
from sim.demo.script import FAST, REPO_RULES, demo_timing, steps
from sim.demo.stack import Stack, running_stack
from tests.e2ekit import rollguard_cli

pytestmark = [pytest.mark.long, pytest.mark.prometheus, pytest.mark.kubectl, pytest.mark.timeout(300)]

DECIDING = {
    # The Event that says what the daemon did with a revision, as `kubectl get events` shows it.
    "RolledBack": (re.compile(r"^Rolled back staging/backend from revision (\d+) to"), "rolled back"),
    "ReviewRequested": (re.compile(r"^Review a rollback of staging/backend revision (\d+):"), "reviewed"),
    "RuleMatched": (re.compile(r"^staging/backend revision (\d+): rule matched"), "notified"),
    "AnalysisPassed": (re.compile(r"^Rollout of staging/backend revision (\d+) passed"), "passed"),
}
STARTED = re.compile(r"^Rollout of staging/backend revision (\d+) started: .* image (\S+)\.$")
NOT_REPLAYABLE_RULES = ["key-feature-down", "minor-errors"]
"""The demo policy's rules on signals replay cannot measure: health/API/WebSocket checks and pod logs."""


async def daemon_verdicts(stack: Stack) -> dict[str, tuple[int, str]]:
    """Image → (revision, what the daemon did first: rolled back, reviewed, notified or passed), from its Events."""
    events = json.loads(await stack.kubectl("get", "events", "-n", "staging", "-o", "json"))["items"]
    mine = [e for e in events if (e.get("source") or {}).get("component") == "rollguard"]
    images: dict[int, str] = {}
    first: dict[int, str] = {}
    for event in mine:
        if event["reason"] == "AnalysisStarted" and (started := STARTED.match(event["message"])):
            images[int(started.group(1))] = started.group(2)
        pattern, verdict = DECIDING.get(event["reason"], (None, ""))
        if pattern is not None and (found := pattern.match(event["message"])):
            first.setdefault(int(found.group(1)), verdict)
    return {image: (revision, first.get(revision, "none")) for revision, image in images.items()}


async def test_replay_of_the_demo_reaches_the_daemons_verdicts_except_where_signals_are_not_replayable(
        tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    demo_timing(REPO_RULES, rules_dir, FAST)
    use_suspend(rules_dir)
    async with running_stack(workdir=tmp_path, rules_dir=rules_dir, actions=GITOPS_LIMITS) as stack:
        demo = Demo(stack, Timeline(io.StringIO()), FAST)
        await stack.apply(backend_service())
        for step in steps(FAST):
            await demo.run_step(step)
        assert [s.verdict for s in demo.steps] == ["passed", "passed", "rolled back", "review → approved → rolled back",
                                                   "notified, not rolled back", "failed → rolled back"]
        daemon = await daemon_verdicts(stack)
        code, out, err = await rollguard_cli(
            "replay", "--rules", str(rules_dir), "--prometheus-url", stack.cluster.prometheus_url,
            "--kubeconfig", str(stack.cluster.kubeconfig), "staging/backend", "-o", "json")
    assert code == 0, err
    document = json.loads(out)
    replayed: dict[str, dict[str, Any]] = {r["images"][0]: r for r in document["rollouts"]}
    images = [s.image for s in demo.steps]
    assert list(daemon) == images, daemon
    assert list(replayed) == images, out
    differ = []
    for image in images:
        revision, verdict = daemon[image]
        replay = replayed[image]
        assert replay["revision"] == revision, out
        if replay["unknownRules"] == NOT_REPLAYABLE_RULES and replay["outcome"] == "unknown":
            # Nothing replayable fired; the daemon's own verdict rested on the checks and logs replay lacks.
            differ.append((image, verdict))
            continue
        assert (image, replay["outcome"]) == (image, verdict), out
    # The honest differences, exactly: v1 and v2 passed with their health checks and logs clean, and v5's
    # notify came from its logs — none of which is in Prometheus.
    assert differ == [("backend:v1", "passed"), ("backend:v2", "passed"), ("backend:v5", "notified")], out
    assert [(replayed[i]["rule"], replayed[i]["startedFrom"]) for i in ("backend:v3", "backend:v4",
                                                                        "backend:v6-never-ready")] == [
        ("error-rate-over-5pct", "rollguard state"), ("latency-worse-than-50pct", "rollguard state"),
        ("onFailure", "rollguard state")], out
    # v4's stable baseline is v2's template as the daemon measured it: revision 4, rollguard's undo of v3.
    assert "baseline.p95_latency=" in replayed["backend:v4"]["message"], out
    assert " of revision 4, " in replayed["backend:v4"]["message"], out
    assert document["notes"] == [
        f"staging/backend revision {undo}: rollguard's own rollback of revision {undo - 1}, not judged (the daemon "
        "does not judge its own undo)" for undo in (4, 6, 9)], out
