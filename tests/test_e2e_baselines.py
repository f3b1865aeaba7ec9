"""End to end, real Prometheus: `baseline: stable` compares with the last revision that passed.

The shipped example policy at demo speed. Revision 1 (100 ms) passes its analysis. Then, as a new
user does, `kubectl set image` followed at once by `kubectl set env` makes revision 2, which lives
a few hundred milliseconds and is never scraped, and revision 3, 2.8 times slower. With
`baseline: previous` revision 3 compared with revision 2, found no data, and (`onInconclusive:
ignore`) passed silently; with `baseline: stable` it compares with revision 1 and asks for review.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from sim.demo.run import FAST, REPO_RULES, demo_timing
from sim.demo.stack import running_stack
from tests.e2ekit import (
    eventually,
    pagerduty_events,
    revision_of,
    serving_v1,
    state_is_for,
    state_of,
    wait_for_traffic,
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
        assert "of revision 1)" in decision["reason"], decision
        (trigger,) = [e for e in pagerduty_events(stack) if e.get("event_action") == "trigger"]
        details = trigger["payload"]["custom_details"]
        assert 0.05 < details["baseline"]["p95_latency"] < 0.3, details
        assert details["values"]["p95_latency"] > 1.5 * details["baseline"]["p95_latency"], details

        async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon_url}/api/v1/analyses") as answer:
            view = await answer.json()
        (analysis,) = [a for a in view["analyses"] if a["revision"] == 3]
        assert analysis["baselines"]["p95_latency"]["revision"] == 1, analysis
