"""End to end with a real Prometheus and a real Alertmanager: the team's own alerting rule fires for the
bad revision's pods, Alertmanager posts it to rollguard's webhook, and rollguard rolls back at once
(the policy's interval is far longer than the test: only the push can act in time). With the webhook
dropped, the pull on each tick still catches the alert."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sim.alertmanager import AlertingPrometheus, AlertmanagerServer
from sim.demo.stack import running_stack
from tests.e2ekit import deploy, eventually, image_of, revision_of, serving_v1, state_of

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

TOKEN = "am-webhook-t0ken-for-tests"

ALERT_RULES: dict[str, Any] = {"groups": [{"name": "backend", "rules": [{
    "alert": "HighErrorRate",
    "expr": 'sum by (namespace, pod) (rate(http_requests_total{code=~"5.."}[5s]))'
            " / sum by (namespace, pod) (rate(http_requests_total[5s])) > 0.2",
    "for": "0s",
    "labels": {"severity": "critical"},
    "annotations": {"summary": "{{ $labels.pod }} answers too many errors"},
}]}]}


def policy(interval: str) -> str:
    return f"""\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {{name: backend-alerts}}
spec:
  selector: {{namespaces: [staging], matchLabels: {{app: backend}}}}
  analysis: {{initialDelay: 1s, interval: {interval}, bakeTime: 5m}}
  signals:
    firing:
      alerts:
        matchers: ['alertname=~"HighErrorRate|SlowRequests"', 'severity="critical"']
        scope: pod
  rules:
    - name: team-alert-firing
      when: "firing > 0"
      action: rollback
"""


async def run_scenario(tmp_path: Path, *, interval: str, push: bool) -> tuple[float, dict[str, Any]]:
    """Deploy v1, then a v2 answering half its requests with errors; seconds from v2's deploy to the rollback."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "backend.yaml").write_text(policy(interval))
    token_file = tmp_path / "webhook-token"
    token_file.write_text(TOKEN)
    async with running_stack(workdir=tmp_path, rules_dir=rules, start_daemon=False) as stack:
        assert stack.cluster.prometheus is not None
        webhook = f"{stack.daemon_url}/api/v1/alerts/alertmanager" if push else "http://127.0.0.1:9/dropped"
        async with AlertmanagerServer(webhook_url=webhook, token=TOKEN) as am, \
                AlertingPrometheus(stack.cluster.prometheus.sd_file, rules=ALERT_RULES, alertmanager=am.url):
            stack.settings = replace(stack.settings, alertmanager_url=am.url,
                                     alertmanager_webhook_token_file=token_file)
            await serving_v1(stack)
            await stack.start_daemon()
            deployed = time.monotonic()
            await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.5")
            await eventually(lambda: revision_of(stack) == 2, timeout=20, what="revision 2 to start", stack=stack)
            await eventually(lambda: image_of(stack) == "backend:v1", timeout=45, stack=stack,
                             what="rollguard to roll backend back to v1 on the team's alert")
            took = time.monotonic() - deployed
            await eventually(lambda: state_of(stack).get("phase") in ("rolling-back", "rolled-back"), timeout=20,
                             what="the state annotation to record the rollback", stack=stack)
            return took, state_of(stack)


async def test_an_alert_pushed_by_alertmanager_rolls_back_at_once(tmp_path: Path) -> None:
    took, state = await run_scenario(tmp_path, interval="10m", push=True)
    # One evaluation at initialDelay (1 s, before the alert can fire), the next one ten minutes later:
    # the rollback within the test's time can only come from the webhook waking the analysis.
    assert took < 45
    assert state["decision"]["rule"] == "team-alert-firing", state


async def test_with_the_webhook_dropped_the_pull_still_rolls_back(tmp_path: Path) -> None:
    took, state = await run_scenario(tmp_path, interval="1s", push=False)
    assert took < 45
    assert state["decision"]["rule"] == "team-alert-firing", state
