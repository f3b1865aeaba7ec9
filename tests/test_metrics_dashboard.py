"""The example Grafana dashboard (`helm/dashboards/`) queries only the per-Deployment series the daemon serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from daemon.metrics import Metrics

DASHBOARD = Path(__file__).parent.parent / "helm" / "dashboards" / "rollguard-analyses.json"
PER_DEPLOYMENT = {"rollguard_analysis_state", "rollguard_signal_value", "rollguard_rule_pending_seconds"}


def test_the_dashboard_uses_only_the_per_deployment_metrics_and_their_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for e in exprs for name in re.findall(r"\brollguard_[a-z_]+", e)}
    assert used == PER_DEPLOYMENT, used
    served = {m.name for m in Metrics().registry.collect()}
    assert used <= served, used - served
    labels = {label for e in exprs for label in re.findall(r"\{\{(\w+)\}\}", json.dumps(dashboard))}
    assert labels <= {"namespace", "deployment", "signal", "rule"}, (labels, exprs)
