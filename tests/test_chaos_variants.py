"""The checker catches broken daemons: each deliberately broken variant (a monkeypatch applied by
`tests/chaos/launcher.py`, never an edit of `daemon/`) is played on a schedule that exposes it, and
the checker must report the invariant that variant breaks — with the evidence an SRE would need.

Each variant's expected violation is also asserted absent from today's daemon on the same schedule
(where today's daemon is clean there), so the report is caused by the variant, not by the schedule.
"""

from __future__ import annotations

import pytest

from tests.chaos.report import Summary
from tests.chaos.slice import CASES, clean_label

pytestmark = [pytest.mark.prometheus, pytest.mark.serial, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def runs(chaos_slice: dict[str, Summary]) -> dict[str, Summary]:
    return chaos_slice


@pytest.mark.parametrize("variant", list(CASES))
def test_the_checker_catches_the_broken_variant(variant: str, runs: dict[str, Summary]) -> None:
    schedule, invariant, words = CASES[variant]
    caught = [v for v in runs[variant].violations if v.startswith(f"{invariant}:") and words in v]
    assert caught, f"{variant}: no {invariant} violation saying {words!r}; got:\n" + "\n".join(
        runs[variant].violations)
    clean = runs[clean_label(schedule)]
    assert not [v for v in clean.violations if v.startswith(f"{invariant}:") and words in v], (
        "today's daemon already shows it on this schedule:\n" + "\n".join(clean.violations))


def test_no_report_quotes_the_secret_it_found(runs: dict[str, Summary]) -> None:
    from sim.demo.stack import ROUTING_KEY, SLACK_TOKEN

    text = "\n".join(line for s in runs.values() for line in s.violations)
    assert SLACK_TOKEN not in text
    assert ROUTING_KEY not in text
