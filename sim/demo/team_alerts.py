"""The demo's last step: the team's own Prometheus alert, not a rollguard query, rolls a deploy back.

When Alertmanager is installed (`make prometheus` installs it), the demo starts a real Alertmanager
and a Prometheus that scrapes the same pods and evaluates the team's alerting rule `SlowRequests`
(a pod's mean request latency over 400 ms). Alertmanager posts to the daemon's webhook with a bearer
token. The demo's copy of the policy gains an `alerts` signal counting that alert for the new revision's
pods and a rule that rolls back as soon as it fires. The threshold is above every earlier step's
latency (v4 is 180 ms), so the earlier verdicts do not change. The step, v7 at 500 ms per request,
would only ask for a review under the policy's own latency rule (for 12 s); the alert rolls it back
first. The daemon's rollback cap is raised to 4 (steps 3, 4 and 6 roll back too). Without Alertmanager
the step is skipped, and the demo says so.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from sim.alertmanager import ALERTMANAGER_BINARIES, AlertingPrometheus, AlertmanagerServer
from sim.demo.stack import Stack

ALERT_NAME = "SlowRequests"
RULE_NAME = "team-alert-firing"
TOKEN = "demo-alertmanager-webhook-t0ken"
VERDICT = "team alert → rolled back"
MAX_ROLLBACKS = 4
"""The demo's rollback cap per Deployment and hour: its fourth rollback is this step's."""
ALERT_RULES: dict[str, Any] = {"groups": [{"name": "backend", "rules": [{
    "alert": ALERT_NAME,
    "expr": "sum by (namespace, pod) (rate(http_request_duration_seconds_sum[10s]))"
            " / sum by (namespace, pod) (rate(http_request_duration_seconds_count[10s])) > 0.4",
    "for": "0s",
    "labels": {"severity": "critical", "team": "backend"},
    "annotations": {"summary": "{{ $labels.pod }} takes {{ $value | humanizeDuration }} per request"},
}]}]}


def available() -> bool:
    """Is an Alertmanager binary installed?"""
    return any(shutil.which(name) for name in ALERTMANAGER_BINARIES)


def add_to_policies(rules_dir: Path) -> None:
    """Add the `alerts` signal and its rollback rule to each policy copied into `rules_dir`."""
    for path in sorted(rules_dir.glob("*.y*ml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in documents:
            spec = doc.get("spec") or {}
            spec.setdefault("signals", {})["team_alerts"] = {
                "alerts": {"matchers": [f'alertname="{ALERT_NAME}"', 'severity="critical"'], "scope": "pod"}}
            spec.setdefault("rules", []).append({"name": RULE_NAME, "when": "team_alerts > 0", "action": "rollback"})
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


@contextlib.asynccontextmanager
async def team_alerting(stack: Stack, *, enabled: bool) -> AsyncIterator[str | None]:
    """Alertmanager + the team's alerting Prometheus for the block, with the daemon's settings pointed at
    them (call before the daemon starts). Yields Alertmanager's URL, or None when not `enabled`."""
    if not enabled or stack.cluster.prometheus is None:
        yield None
        return
    token_file = stack.workdir / "alertmanager-webhook-token"
    token_file.write_text(TOKEN)
    webhook = f"{stack.daemon_url}/api/v1/alerts/alertmanager"
    async with AlertmanagerServer(webhook_url=webhook, token=TOKEN) as alertmanager, \
            AlertingPrometheus(stack.cluster.prometheus.sd_file, rules=ALERT_RULES, alertmanager=alertmanager.url):
        # Steps 3, 4 and 6 already rolled back three times within the hour: the default cap (3) would turn
        # this fourth rollback into a review.
        cap = max(MAX_ROLLBACKS, stack.settings.actions.max_rollbacks)
        actions = replace(stack.settings.actions, max_rollbacks=cap)
        stack.settings = replace(stack.settings, alertmanager_url=alertmanager.url,
                                 alertmanager_webhook_token_file=token_file, actions=actions)
        yield alertmanager.url


def verdict(state: dict[str, Any], *, rolled_back: bool) -> str:
    """The step's verdict from the state annotation: which rule rolled it back, and on what evidence."""
    decision = state.get("decision") or {}
    if rolled_back and decision.get("rule") == RULE_NAME:
        return VERDICT
    return f"? (rule {decision.get('rule')!r}, rolled back: {rolled_back})"


def describe() -> str:
    """One header line: what fires and what the policy does with it."""
    return (f"Prometheus alert {ALERT_NAME} (a pod's mean latency > 400 ms) → Alertmanager → rollguard's webhook; "
            f"rule {RULE_NAME}: team_alerts > 0 → rollback; rollback cap at least {MAX_ROLLBACKS} per hour for step 7")
