"""The checker catches broken daemons: each deliberately broken variant (a monkeypatch applied by
`tests/chaos/launcher.py`, never an edit of `daemon/`) is played on a schedule that exposes it, and
the checker must report the invariant that variant breaks — with the evidence an SRE would need.

Each variant's expected violation is also asserted absent from today's daemon on the same schedule
(where today's daemon is clean there), so the report is caused by the variant, not by the schedule.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.chaos.report import SIDE_BY_SIDE, Summary, run_one
from tests.chaos.schedule import Fault, Schedule, Step, env_for, kill_point_schedule

pytestmark = [pytest.mark.prometheus, pytest.mark.serial, pytest.mark.timeout(600)]

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


@pytest.fixture(scope="module")
def runs() -> dict[str, Summary]:
    jobs = [(schedule, variant, variant) for variant, (schedule, _, _) in CASES.items()]
    jobs += [(schedule, "none", f"clean-{schedule.seed}") for schedule in {c[0].seed: c[0] for c in
                                                                            CASES.values()}.values()]
    with ProcessPoolExecutor(max_workers=SIDE_BY_SIDE) as pool:
        done = list(pool.map(run_one, *zip(*jobs, strict=True)))
    return {s.label: s for s in done}


@pytest.mark.parametrize("variant", list(CASES))
def test_the_checker_catches_the_broken_variant(variant: str, runs: dict[str, Summary]) -> None:
    schedule, invariant, words = CASES[variant]
    caught = [v for v in runs[variant].violations if v.startswith(f"{invariant}:") and words in v]
    assert caught, f"{variant}: no {invariant} violation saying {words!r}; got:\n" + "\n".join(
        runs[variant].violations)
    clean = runs[f"clean-{schedule.seed}"]
    assert not [v for v in clean.violations if v.startswith(f"{invariant}:") and words in v], (
        "today's daemon already shows it on this schedule:\n" + "\n".join(clean.violations))


def test_no_report_quotes_the_secret_it_found(runs: dict[str, Summary]) -> None:
    from sim.demo.stack import ROUTING_KEY, SLACK_TOKEN

    text = "\n".join(line for s in runs.values() for line in s.violations)
    assert SLACK_TOKEN not in text
    assert ROUTING_KEY not in text
