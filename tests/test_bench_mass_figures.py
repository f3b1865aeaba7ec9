"""`mass_rollout` reads the daemon's own lag figures from its `/metrics`: the share of the evaluations
finished between two readings that were within 0.5 s and within 1 s of their planned tick."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bench.mass import lag_shares, parse_metrics
from daemon.metrics import Metrics


def _reading(registry: CollectorRegistry) -> dict[str, float]:
    return parse_metrics(generate_latest(registry).decode())


def test_the_shares_count_only_the_evaluations_between_the_two_readings() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for late in (3.0, 4.0):  # before the window: not counted
        metrics.evaluated("none", 0.01, late, [])
    before = _reading(registry)
    for late in (0.1, 0.5, 0.7, 1.0, 2.0):
        metrics.evaluated("none", 0.01, late, [])
    metrics.evaluated("none", 0.01, None, [])  # woken by pushed evidence: no planned tick, no lag
    metrics.ticks_skipped.inc(2)
    after = _reading(registry)

    assert lag_shares(before, after) == {"evaluations": 5, "within_0.5_s": 0.4, "within_1_s": 0.8}
    assert after["rollguard_ticks_skipped_total"] - before.get("rollguard_ticks_skipped_total", 0) == 2


def test_no_evaluation_in_the_window_has_no_share() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    reading = _reading(registry)

    assert lag_shares(reading, reading) == {"evaluations": 0, "within_0.5_s": None, "within_1_s": None}
