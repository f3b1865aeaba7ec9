"""rollguard's invariants under a SIGKILL at every write point of one rollback, and under a few seeds.

The write points are enumerated from the API server's audit log of a clean run (every write the
daemon made once the bad deploy landed), not by hand; then the same scenario is played once per
point with the daemon SIGKILLed right after that write is applied and restarted a second later.
Runs are played four at a time (one process each) in a module fixture; each test asserts one run.

Before the lifecycle rewrite these runs reproduced its findings (docs/reliability.md, "Before the
lifecycle fix"); now every run must be clean (`KNOWN` is empty).
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.chaos.report import SIDE_BY_SIDE, Summary, run_one
from tests.chaos.schedule import generate, kill_point_schedule

pytestmark = [pytest.mark.prometheus, pytest.mark.serial, pytest.mark.timeout(900)]

EXPECTED_POINTS = 15
"""Writes of the clean rollback: state (the start, its announcement owed in the outbox),
AnalysisStarted, state x4 (the outbox cleared once delivered, the rule timers, the rollback's plan:
step `job`), Job, RollbackJobSucceeded, undo (with its state), state (the announcement owed),
RolledBack, state (delivered: cleared), state (completed, owed), RollbackCompleted, state (cleared).
The number of state writes before the verdict varies with timing."""
SEEDS = (5, 6)
KNOWN: dict[str, re.Pattern[str]] = {}
"""Violation shapes accepted as known findings: none since the lifecycle rewrite (docs/reliability.md
keeps the list of what the seeds and kill points found before it)."""


def unexplained(run: Summary) -> list[str]:
    return [v for v in run.violations if not any(shape.match(v) for shape in KNOWN.values())]


@pytest.fixture(scope="module")
def runs() -> dict[str, Summary]:
    # The clean run enumerates the write points; the kill runs go alongside it, and the first test
    # checks that the enumeration is the one they assumed.
    jobs = [(kill_point_schedule(0), "none", "clean")]
    jobs += [(kill_point_schedule(i), "none", f"kill-{i}") for i in range(1, EXPECTED_POINTS + 1)]
    jobs += [(generate(seed), "none", f"seed-{seed}") for seed in SEEDS]
    with ProcessPoolExecutor(max_workers=SIDE_BY_SIDE) as pool:
        done = list(pool.map(run_one, *zip(*jobs, strict=True)))
    return {s.label: s for s in done}


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
