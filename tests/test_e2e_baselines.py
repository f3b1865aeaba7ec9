"""End to end, real Prometheus: `baseline: stable` compares with the last revision that passed.

The shipped example policy at demo speed. Revision 1 (100 ms) passes its analysis. Then, as a new
user does, `kubectl set image` followed at once by `kubectl set env` makes revision 2, which lives
a few hundred milliseconds and is never scraped, and revision 3, 2.8 times slower. With
`baseline: previous` revision 3 compared with revision 2, found no data, and (`onInconclusive:
ignore`) passed silently; with `baseline: stable` it compares with revision 1 and asks for review.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
import yaml

from sim.demo.script import FAST, REPO_RULES, Timing, demo_timing
from sim.demo.stack import running_stack
from tests.e2ekit import (
    deploy,
    deployment,
    eventually,
    image_of,
    revision_of,
    serving_v1,
    state_is_for,
    state_of,
    wait_for_traffic,
    wait_trigger,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(150)]


async def test_a_slow_build_behind_a_short_lived_revision_is_compared_with_the_last_passed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    demo_timing(REPO_RULES, rules, FAST)
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await serving_v1(stack, SIM_LATENCY_MS="100")
        await wait_for_traffic(stack)
        await eventually(lambda: state_is_for(stack, 1) and state_of(stack).get("phase") == "passed", timeout=40,
                         what="revision 1's analysis to pass", stack=stack)

        await stack.kubectl("set", "image", "deployment/backend", "-n", "staging", "backend=backend:v2")
        await stack.kubectl("set", "env", "deployment/backend", "-n", "staging", "SIM_LATENCY_MS=280")
        await eventually(lambda: revision_of(stack) == 3, timeout=30, what="revision 3 to start", stack=stack)
        await eventually(lambda: state_is_for(stack, 3) and state_of(stack).get("phase") == "review", timeout=60,
                         what="rollguard to ask for a review of revision 3", stack=stack)

        decision = state_of(stack)["decision"]
        assert decision["rule"] == "latency-worse-than-50pct", decision
        assert "baseline.p95_latency=" in decision["reason"], decision
        assert "of revision 1, increase(p95_latency)=+" in decision["reason"], decision
        trigger = await wait_trigger(stack)
        details = trigger["payload"]["custom_details"]
        assert 0.05 < details["baseline"]["p95_latency"] < 0.3, details
        assert details["values"]["p95_latency"] > 1.5 * details["baseline"]["p95_latency"], details

        async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon_url}/api/v1/analyses") as answer:
            view = await answer.json()
        (analysis,) = [a for a in view["analyses"] if a["revision"] == 3]
        assert analysis["baselines"]["p95_latency"]["revision"] == 1, analysis


async def test_a_concurrent_baseline_catches_a_slower_revision_before_the_rollout_completes(tmp_path: Path) -> None:
    """The shipped policy with `baseline: concurrent`. Revision 2 is 50% slower (p95 about 1.6 times);
    its pods take 12 s to become ready, one at a time (maxSurge 1, maxUnavailable 0), so the old pods
    serve next to the new ones for over half a minute, and the comparison is made meanwhile."""
    rules = tmp_path / "rules"
    demo_timing(REPO_RULES, rules, Timing(initial_delay=3, interval=1, bake_time=4, for_divisor=60,
                                          progress_deadline=120))
    path = rules / "backend-staging.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["spec"]["signals"]["p95_latency"]["prometheus"]["baseline"] = "concurrent"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await serving_v1(stack, SIM_LATENCY_MS="100")
        await wait_for_traffic(stack)

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="150", SIM_READY_DELAY="12")
        await eventually(lambda: state_is_for(stack, 2) and state_of(stack).get("phase") == "review", timeout=40,
                         what="rollguard to ask for a review of revision 2", stack=stack)
        status = deployment(stack)["status"]
        assert status.get("updatedReplicas", 0) < 3 or status.get("availableReplicas", 0) < 3, status

        decision = state_of(stack)["decision"]
        assert decision["rule"] == "latency-worse-than-50pct", decision
        assert "of revision 1, increase(p95_latency)=+" in decision["reason"], decision
        async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon_url}/api/v1/analyses") as answer:
            view = await answer.json()
        (analysis,) = [a for a in view["analyses"] if a["revision"] == 2]
        baseline = analysis["baselines"]["p95_latency"]
        assert baseline["revision"] == 1, baseline
        assert re.match(r"revision 1, its [123] ready pods measured at the same time: ", baseline["message"]), baseline
        trigger = await wait_trigger(stack)
        details = trigger["payload"]["custom_details"]
        assert 1.5 < details["values"]["p95_latency"] / details["baseline"]["p95_latency"] < 1.8, details


async def test_a_reapplied_rolled_back_build_compares_with_the_last_passed_revision(tmp_path: Path) -> None:
    """Revision 1 (100 ms) passes; revision 2 fails (errors) and is rolled back, which makes revision 3
    (revision 1's template); revision 4, a slow build (300 ms), is sent for review and never passes. When
    revision 2's template is applied again (revision 5), its stable baseline is revision 3, the last that
    passed: not the slow revision 4 just before it (what `baseline: previous` gives), and not the rolled-back
    template itself."""
    rules = tmp_path / "rules"
    demo_timing(REPO_RULES, rules, Timing(initial_delay=3, interval=1, bake_time=4, for_divisor=60,
                                          progress_deadline=120))
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await serving_v1(stack, SIM_LATENCY_MS="100")
        await wait_for_traffic(stack)
        await eventually(lambda: state_is_for(stack, 1) and state_of(stack).get("phase") == "passed", timeout=40,
                         what="revision 1's analysis to pass", stack=stack)

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="100", SIM_ERROR_RATIO="0.5")
        await eventually(lambda: revision_of(stack) == 3 and image_of(stack) == "backend:v1", timeout=40,
                         what="rollguard to roll revision 2 back to revision 1's template", stack=stack)
        await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=40,
                         what="the rollback to complete", stack=stack)
        await deploy(stack, "backend:v3", SIM_LATENCY_MS="300")
        await eventually(lambda: state_is_for(stack, 4) and state_of(stack).get("phase") == "review", timeout=40,
                         what="rollguard to ask for a review of the slow revision 4", stack=stack)

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="100", SIM_ERROR_RATIO="0.5")
        await eventually(lambda: revision_of(stack) == 5, timeout=30, what="the re-applied revision 5", stack=stack)
        baseline: dict[str, object] = {}

        async def baseline_measured() -> bool:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{stack.daemon_url}/api/v1/analyses") as answer:
                view = await answer.json()
            found = [a["baselines"].get("p95_latency") for a in view["analyses"] if a["revision"] == 5]
            if found and found[0]:
                baseline.update(found[0])
            return bool(baseline)

        deadline = asyncio.get_running_loop().time() + 30
        while not await baseline_measured():
            assert asyncio.get_running_loop().time() < deadline, "revision 5's baseline measured within 30 s"
            await asyncio.sleep(0.25)
        assert baseline["revision"] == 3, baseline
        assert str(baseline["message"]).startswith("revision 3, the last that passed its analysis: "), baseline
        # 100 ms gives a p95 of about 0.24 s in these buckets; revision 4's 300 ms about 0.66 s.
        assert isinstance(baseline["value"], float), baseline
        assert 0.05 < baseline["value"] < 0.3, baseline
