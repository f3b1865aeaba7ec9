"""`rollguard check` warns when two policies can select the same Deployment (only the first applies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.rules.check import check_paths


def _policy(name: str, namespaces: str, labels: str) -> str:
    return (
        f"apiVersion: rollguard.io/v1\nkind: RollbackPolicy\nmetadata: {{name: {name}}}\n"
        f"spec:\n  selector: {{namespaces: [{namespaces}], matchLabels: {{{labels}}}}}\n"
        "  signals:\n    log_errors:\n      logs: {pattern: ERROR}\n"
        "  rules:\n    - {name: errors, when: 'log_errors > 0', action: notify}\n"
    )


def test_overlapping_selectors_are_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text(_policy("all-backend", "staging", "app: backend"))
    Path("b.yaml").write_text(
        _policy("canary-backend", "staging", "app: backend, track: canary")
        + "---\n" + _policy("other-namespace", "production", "app: backend")
        + "---\n" + _policy("other-app", "staging", "app: frontend")
    )
    assert check_paths(["a.yaml", "b.yaml"]) == (0, [
        "a.yaml: 1 policy, 1 rule OK",
        "b.yaml: 3 policies, 3 rules OK",
        'b.yaml:1: warning: policies "all-backend" (a.yaml:1) and "canary-backend" can select the same '
        'Deployment; only the first in file order, "all-backend", applies to it',
    ])
