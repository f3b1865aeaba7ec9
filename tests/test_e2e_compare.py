"""End to end, real Prometheus: the statistical comparison (`spec.compare`, Mann-Whitney U).

The shipped example policy at test speed, its latency rule replaced by one on a comparison of the
p95 latency sampled every 2 s (a `rate(...[3s])` query, so the samples barely overlap) against the
old pods over the same window. A clearly slower revision is `worse`; a revision that serves a
handful of requests (most steps have no traffic, so no p95) stays inconclusive instead of being
judged on one request.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sim.demo.script import REPO_RULES, Timing, demo_timing
from sim.demo.stack import Stack, running_stack
from tests.e2ekit import (
    deploy,
    eventually,
    pagerduty_events,
    serving_v1,
    state_is_for,
    state_of,
    wait_for_traffic,
    wait_trigger,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(150)]

P95_SHORT = """histogram_quantile(0.95, sum by (le) (
  rate(http_request_duration_seconds_bucket{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}[3s])
))"""


def _policy(rules: Path, *, low_traffic: bool = False) -> None:
    demo_timing(REPO_RULES, rules, Timing(initial_delay=3, interval=1, bake_time=4, for_divisor=60,
                                          progress_deadline=120))
    path = rules / "backend-staging.yaml"
    policy = yaml.safe_load(path.read_text())
    spec = policy["spec"]
    spec["signals"]["p95_short"] = {"prometheus": {"query": P95_SHORT}}
    spec["compare"] = {"latency": {"signal": "p95_short", "baseline": "concurrent", "test": "mann-whitney",
                                   "direction": "increase", "confidence": 0.95, "minSamples": 10, "margin": 0.1,
                                   "step": "2s"}}
    spec["rules"] = [r for r in spec["rules"] if r["name"] != "latency-worse-than-50pct"]
    if low_traffic:
        # At a request every 10 s the error ratio is 0/0 at most steps as well; this test is about the comparison.
        next(r for r in spec["rules"] if r["name"] == "error-rate-over-5pct")["onInconclusive"] = "ignore"
    spec["rules"].append({"name": "slower-than-the-old-pods", "when": "latency.worse", "action": "review",
                          "onInconclusive": "ignore"})
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


async def _analysis(stack: Stack, revision: int) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon_url}/api/v1/analyses") as answer:
        view = await answer.json()
    return next((a for a in view["analyses"] if a["revision"] == revision), None)


async def test_a_clearly_slower_revision_is_worse_by_the_test(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _policy(rules)
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await serving_v1(stack, SIM_LATENCY_MS="100")
        await wait_for_traffic(stack)

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="280", SIM_READY_DELAY="12")
        await eventually(lambda: state_is_for(stack, 2) and state_of(stack).get("phase") == "review", timeout=70,
                         what="rollguard to ask for a review of revision 2", stack=stack)

        decision = state_of(stack)["decision"]
        assert decision["rule"] == "slower-than-the-old-pods", decision
        assert "latency.worse=true" in decision["reason"], decision
        trigger = await wait_trigger(stack)
        values = trigger["payload"]["custom_details"]["values"]
        assert values["latency.worse"] is True, values
        assert values["latency.p"] < 0.05, values
        assert values["latency.effect"] > 1.0, values  # 280 ms against 100 ms: the median p95 over twice as large
        assert values["latency.samples"] >= 10, values


async def test_a_handful_of_requests_stays_inconclusive(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _policy(rules, low_traffic=True)
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await serving_v1(stack, SIM_LATENCY_MS="100")
        await wait_for_traffic(stack)

        # Slower, but a request every 10 s per pod: a few steps of the window have a p95 at all.
        await deploy(stack, "backend:v2", SIM_LATENCY_MS="280", SIM_READY_DELAY="12", SIM_RPS="0.1")
        deadline = time.monotonic() + 60
        while (seen := await _analysis(stack, 2)) is None or seen["evaluations"] < 25:
            assert time.monotonic() < deadline, f"25 evaluations of revision 2 within 60 s: {seen}"
            await asyncio.sleep(0.5)
        assert seen["values"]["latency"] == "inconclusive", seen
        assert seen["verdict"]["action"] == "pass", seen
        assert "slower-than-the-old-pods" in seen["verdict"]["reason"], seen
        assert state_of(stack).get("phase") not in ("review", "rolled-back", "rolling-back"), state_of(stack)
        assert [e for e in pagerduty_events(stack) if e.get("event_action") == "trigger"] == []
