"""Rule evaluation cost: µs per rule per evaluation of the shipped policy with the CEL library chosen.

`daemon.rules.evaluate.evaluate` is called on `rules/backend-staging.yaml` (4 rules, 6 signals, one
baseline) with synthetic Measurements, the way an analysis tick calls it (the `for` timers carried
from one call to the next). Three input sets:

* `healthy`: every signal OK, every rule false (the common case);
* `bad`: 12% errors, a failing health check, latency 3× the baseline (every rule true, timers running);
* `no_data`: Prometheus inconclusive, the WebSocket check in error (the held paths).

`cel_only` is the CEL program alone (`CompiledExpression.evaluate` on a ready activation) for the
first rule, to show what the CEL library costs inside the total.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import REPO
from daemon.rules.evaluate import EvaluationState, _inputs, evaluate
from daemon.rules.loader import load_file
from daemon.rules.model import RollbackPolicy
from daemon.signals.base import Measurement, Phase

POLICY = REPO / "rules" / "backend-staging.yaml"


def _ok(value: float | bool) -> Measurement:
    return Measurement(Phase.OK, value, "synthetic")


INPUTS: dict[str, dict[str, Measurement]] = {
    "healthy": {"error_rate": _ok(0.01), "p95_latency": _ok(0.12), "log_errors": _ok(0), "health": _ok(True),
                "api": _ok(True), "ws": _ok(True)},
    "bad": {"error_rate": _ok(0.12), "p95_latency": _ok(0.36), "log_errors": _ok(17),
            "health": Measurement(Phase.FAILED, False, "503"), "api": _ok(True), "ws": _ok(True)},
    "no_data": {"error_rate": Measurement(Phase.INCONCLUSIVE, None, "empty vector"),
                "p95_latency": Measurement(Phase.INCONCLUSIVE, None, "empty vector"), "log_errors": _ok(0),
                "health": _ok(True), "api": _ok(True), "ws": Measurement(Phase.ERROR, None, "refused")},
}
BASELINES = {"p95_latency": _ok(0.12)}


def load_policy(path: Path = POLICY) -> RollbackPolicy:
    result = load_file(path)
    if result.errors:
        raise RuntimeError("; ".join(str(e) for e in result.errors))
    return result.policies[0]


def _time_evaluate(policy: RollbackPolicy, measurements: dict[str, Measurement], iterations: int) -> float:
    """Seconds for `iterations` evaluations, timers carried along as an analysis does."""
    state = EvaluationState()
    now = 1_700_000_000.0
    started = time.perf_counter()
    for i in range(iterations):
        _, state = evaluate(policy, measurements, BASELINES, state, now + i * 15.0)
    return time.perf_counter() - started


def _time_cel(policy: RollbackPolicy, measurements: dict[str, Measurement], iterations: int) -> float:
    rule = policy.rules[0]
    types = {name: policy.signals[name].type for name in rule.when.signals}
    activation = _inputs(rule, types, measurements, BASELINES).activation
    started = time.perf_counter()
    for _ in range(iterations):
        rule.when.evaluate(activation)
    return time.perf_counter() - started


def run(*, iterations: int = 20_000, repeats: int = 5) -> dict[str, Any]:
    policy = load_policy()
    rules = len(policy.rules)
    cases: dict[str, Any] = {}
    for name, measurements in INPUTS.items():
        _time_evaluate(policy, measurements, min(iterations, 1000))  # warm up
        runs = [_time_evaluate(policy, measurements, iterations) for _ in range(repeats)]
        per_eval = statistics.median(runs) / iterations * 1e6
        cases[name] = {"us_per_evaluation": round(per_eval, 2), "us_per_rule": round(per_eval / rules, 2)}
    cel_runs = [_time_cel(policy, INPUTS["healthy"], iterations) for _ in range(repeats)]
    cel_us = statistics.median(cel_runs) / iterations * 1e6
    worst = max(c["us_per_rule"] for c in cases.values())
    return {
        "scenario": "rules_cost",
        "policy": str(POLICY.relative_to(REPO)),
        "rules": rules,
        "signals": len(policy.signals),
        "iterations": iterations,
        "repeats": repeats,
        "cases": cases,
        "cel_only_us": round(cel_us, 2),
        # What the rules of 1,000 analyses at a 10 s interval cost: % of one core.
        "cpu_pct_1000_analyses_10s": round(100 * worst * rules * 1000 / 10 / 1e6, 3),
    }
