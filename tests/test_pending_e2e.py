"""End to end: data that cannot exist yet is not missing data.

The example policy with `initialDelay: 0s` (the demo's timings otherwise), plus the runbook's
"immediate rollback" written the way a user writes it: `log_errors > 0`, `action: rollback`, no
`for`. The first evaluations of revision 2 come before any of its containers has started and
before Prometheus has scraped its pods: those signals are *pending*, which pages nothing and
posts nothing; the healthy revision then passes its analysis with no PagerDuty event and no Slack
message about missing data.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sim.demo.manifests import backend_service
from sim.demo.script import REPO_RULES, Timing, demo_timing
from sim.demo.stack import running_stack
from tests.e2ekit import (
    deploy,
    event_reasons,
    eventually,
    pagerduty_events,
    revision_of,
    rollout_status,
    slack_texts,
    state_is_for,
    state_of,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

IMMEDIATE = Timing(initial_delay=0, interval=1, bake_time=4, for_divisor=20, progress_deadline=30)


def rules_with_immediate_log_rollback(target: Path) -> None:
    """The shipped policy at demo speed with `initialDelay: 0s`, and a no-`for` rollback on log errors."""
    demo_timing(REPO_RULES, target, IMMEDIATE)
    path = target / "backend-staging.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["spec"]["rules"].append({"name": "log-errors-immediate", "when": "log_errors > 0", "action": "rollback"})
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


async def test_a_healthy_deploy_judged_from_its_first_instant_pages_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules_with_immediate_log_rollback(rules)
    async with running_stack(workdir=tmp_path / "stack", rules_dir=rules) as stack:
        await stack.apply(backend_service())
        await deploy(stack, "backend:v1", SIM_LATENCY_MS="100")
        await rollout_status(stack)
        await eventually(lambda: state_is_for(stack, 1) and state_of(stack).get("phase") == "passed", timeout=40,
                         what="revision 1's analysis to pass", stack=stack)

        await deploy(stack, "backend:v2", SIM_LATENCY_MS="100")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
        await rollout_status(stack)
        await eventually(lambda: state_is_for(stack, 2) and state_of(stack).get("phase") != "analysing",
                         timeout=40, what="revision 2's analysis to end", stack=stack)

        assert state_of(stack)["phase"] == "passed", state_of(stack)
        assert pagerduty_events(stack) == [], pagerduty_events(stack)
        about_missing_data = [t for t in slack_texts(stack) if "cannot evaluate" in t or "Review" in t]
        assert about_missing_data == [], about_missing_data
        reasons = event_reasons(stack)
        assert {"ReviewRequested", "RolledBack"}.isdisjoint(reasons), reasons
