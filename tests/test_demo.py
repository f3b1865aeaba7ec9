"""`rollguard demo --fast`, run as a user runs it: every step of the story ends with the expected verdict."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.long, pytest.mark.prometheus, pytest.mark.timeout(420)]

EXPECTED = {
    "backend:v1": "passed",
    "backend:v2": "passed",
    "backend:v3": "rolled back",
    "backend:v4": "review → approved → rolled back",
    "backend:v5": "notified, not rolled back",
    "backend:v6-never-ready": "failed → rolled back",
    "backend:v7": "team alert → rolled back",
    "backend:v8": "rolled back, sync resumed",
}


def test_demo_plays_the_whole_story() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "demo", "--fast"], capture_output=True, text=True,
                            timeout=400, check=False)
    out = result.stdout
    assert result.returncode == 0, f"demo exited {result.returncode}\n{out[-4000:]}\n{result.stderr[-2000:]}"
    summary = out[out.index("=== Summary ==="):]
    verdicts = {}
    for line in summary.splitlines()[2:]:
        columns = re.split(r"\s{2,}", line.strip())
        if len(columns) == 4:
            verdicts[columns[0]] = columns[2]
    assert verdicts == EXPECTED, summary
    # The bad deploy's time from the first bad sample in Prometheus to the rollback is measured.
    v3 = next(line for line in summary.splitlines() if line.startswith("backend:v3"))
    assert re.search(r"\d+\.\d+s$", v3), v3
    # What people received: PagerDuty pages for the rollback, the review and the failure.
    pagerduty = out[out.index("=== PagerDuty events"):out.index("=== kubectl rollout history")]
    assert "warning  rollguard/staging/backend/5" in pagerduty, pagerduty
    assert "critical rollguard/staging/backend/3" in pagerduty, pagerduty
    assert "Rollout failed" not in pagerduty or "critical rollguard/staging/backend/8" in pagerduty
    # The GitOps step: Argo CD's sync suspended before the undo, the page names the Git revision to revert,
    # and the SRE's `rollguard resume` gives backend back to Argo CD.
    assert re.search(r"RolledBack: Rolled back staging/backend from revision \d+ to revision \d+: deployment.apps/"
                     r"backend rolled back\. Rolled back in the cluster; Argo CD Application argocd/backend is "
                     r"suspended\. Revert Git revision [0-9a-f]{40} in https://git\.example/shop/deploy\.git/"
                     r"staging/backend and resume sync with `rollguard resume staging/backend`", out), out[-6000:]
    assert re.search(r"sre +Argo CD Application argocd/backend: sync policy restored \(Git at [0-9a-f]{40}\); it "
                     r"owns staging/backend again", out), out[-6000:]
    history = out[out.index("=== kubectl rollout history"):out.index("=== Summary")]
    assert "REVISION  CHANGE-CAUSE" in history, history
