"""The fault schedules `make test` plays: every kill point of one rollback, two generated seeds, and each
deliberately broken variant with today's daemon on the same schedule.

They are played in one pool (`SIDE_BY_SIDE` at a time, longest first), once per test session, so the
two test modules that assert on them (`tests/test_chaos_kill_points.py`, `tests/test_chaos_variants.py`)
share the slots and the clean rollback both need.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from tests.chaos.report import SIDE_BY_SIDE, Summary, run_one
from tests.chaos.schedule import Fault, Schedule, Step, env_for, generate, kill_point_schedule

EXPECTED_POINTS = 15
"""Writes of the clean rollback: state (the start, its announcement owed in the outbox),
AnalysisStarted, state x4 (the outbox cleared once delivered, the rule timers, the rollback's plan:
step `job`), Job, RollbackJobSucceeded, undo (with its state), state (the announcement owed),
RolledBack, state (delivered: cleared), state (completed, owed), RollbackCompleted, state (cleared).
The number of state writes before the verdict varies with timing."""
SEEDS = (5, 6)

ROLLBACK = kill_point_schedule(0)
"""v1 healthy, then v2 with 12% errors: one rollback, with its pre-rollback Job."""
NEWER = Schedule(101, (Step("healthy", "backend:v1", env_for("healthy"), None),
                       Step("errors+newer", "backend:v2", env_for("errors"), None)))
"""v2 is bad, and a healthy deploy lands between the undo's read and its JSON patch."""
PAGERDUTY_DOWN = Schedule(102, (Step("healthy", "backend:v1", env_for("healthy"), None),
                                Step("errors", "backend:v2", env_for("errors"), None,
                                     (Fault("pagerduty-fail", 0.0, {"status": 503, "count": 1}),))))
"""The first page after v2's deploy (the rollback's) gets a 503: a retry delivers it."""
DRY_RUN = Schedule(103, ROLLBACK.steps, dry_run=True)
SLACK_DOWN_KILLED = Schedule(104, (Step("healthy", "backend:v1", env_for("healthy"), None),
                                   Step("errors", "backend:v2", env_for("errors"), None,
                                        (Fault("slack-fail", 0.0, {"status": 503, "count": 12}),
                                         Fault("kill-at", 14.0, {"restart": 1.0})))))
"""Slack is down through v2's rollback, and the daemon is killed while the rollback's message waits for
its next retry: the successor must send it."""

CASES = {
    "no-fencing": (NEWER, "I2", "overwrote template"),
    "job-twice": (ROLLBACK, "I3", "2 pre-rollback Jobs ran for revision 2"),
    "no-notify-retry": (PAGERDUTY_DOWN, "I4", "was rolled back but no page says so"),
    "dry-run-ignored": (DRY_RUN, "I5", "writes in dry-run"),
    "secret-in-events": (ROLLBACK, "I6", "appears in Events and other API writes"),
    "no-outbox": (SLACK_DOWN_KILLED, "I4", "RolledBack for revision 2 was never posted to Slack"),
}
"""Broken variant → the schedule that exposes it, the invariant the checker must report, words it must say."""


def clean_label(schedule: Schedule) -> str:
    return f"clean-{schedule.seed}"


def jobs() -> list[tuple[Schedule, str, str]]:
    """(schedule, variant, label) of every run, longest first: the generated seeds have several deploys."""
    plays = [(generate(seed), "none", f"seed-{seed}") for seed in SEEDS]
    plays += [(schedule, variant, variant) for variant, (schedule, _, _) in CASES.items()]
    cleans = {schedule.seed: schedule for schedule, _, _ in CASES.values()}
    plays += [(schedule, "none", clean_label(schedule)) for schedule in cleans.values()]  # the rollback's too
    plays += [(kill_point_schedule(i), "none", f"kill-{i}") for i in range(1, EXPECTED_POINTS + 1)]
    return plays


def play() -> dict[str, Summary]:
    """Every run of the slice, by label (the clean rollback also as "clean")."""
    planned = jobs()
    with ProcessPoolExecutor(max_workers=SIDE_BY_SIDE) as pool:
        done = list(pool.map(run_one, *zip(*planned, strict=True)))
    runs = {s.label: s for s in done}
    runs["clean"] = runs[clean_label(ROLLBACK)]
    return runs
