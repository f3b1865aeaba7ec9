"""rollguard's invariants under a SIGKILL at every write point of one rollback, and under a few seeds.

The write points are enumerated from the API server's audit log of a clean run (every write the
daemon made once the bad deploy landed), not by hand; then the same scenario is played once per
point with the daemon SIGKILLed right after that write is applied and restarted a second later.
The runs are played with the variants' in one pool (`tests/chaos/slice.py`); each test asserts one run.

Before the lifecycle rewrite these runs reproduced its findings (docs/reliability.md, "Before the
lifecycle fix"); now every run must be clean (`KNOWN` is empty).
"""

from __future__ import annotations

import re

import pytest

from tests.chaos.report import Summary
from tests.chaos.slice import EXPECTED_POINTS, SEEDS

pytestmark = [pytest.mark.prometheus, pytest.mark.serial, pytest.mark.timeout(900)]

KNOWN: dict[str, re.Pattern[str]] = {}
"""Violation shapes accepted as known findings: none since the lifecycle rewrite (docs/reliability.md
keeps the list of what the seeds and kill points found before it)."""


def unexplained(run: Summary) -> list[str]:
    return [v for v in run.violations if not any(shape.match(v) for shape in KNOWN.values())]


@pytest.fixture(scope="module")
def runs(chaos_slice: dict[str, Summary]) -> dict[str, Summary]:
    return chaos_slice


def test_the_clean_rollback_writes_in_the_documented_order_and_breaks_nothing(runs: dict[str, Summary]) -> None:
    clean = runs["clean"]
    points = clean.write_points
    # Each announcement is saved (owed) before its Event and its alert go out.
    assert points[:2] == ["patch deployments (state annotation)", "create events (AnalysisStarted)"], points
    assert points[-8:] == ["create events (RollbackJobSucceeded)", "patch deployments (undo)",
                           "patch deployments (state annotation)", "create events (RolledBack)",
                           "patch deployments (state annotation)", "patch deployments (state annotation)",
                           "create events (RollbackCompleted)", "patch deployments (state annotation)"], points
    assert "create jobs" in points[:-8], points
    assert EXPECTED_POINTS - 2 <= len(points) <= EXPECTED_POINTS + 1, points
    assert clean.violations == [], "\n".join(clean.violations)


@pytest.mark.parametrize("point", range(1, EXPECTED_POINTS + 1))
def test_only_known_findings_when_the_daemon_is_killed_after_write(point: int, runs: dict[str, Summary]) -> None:
    run = runs[f"kill-{point}"]
    if point <= EXPECTED_POINTS - 2 or run.injected.get("sim:kill-at-write"):
        assert run.injected.get("sim:kill-at-write") == 1, f"the kill at write {point} did not happen: {run.injected}"
    assert unexplained(run) == [], run.schedule + "\n" + "\n".join(run.violations)


@pytest.mark.parametrize("seed", SEEDS)
def test_only_known_findings_under_a_generated_schedule(seed: int, runs: dict[str, Summary]) -> None:
    run = runs[f"seed-{seed}"]
    assert unexplained(run) == [], run.schedule + "\n" + "\n".join(run.violations)
