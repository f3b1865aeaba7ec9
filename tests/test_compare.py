"""`spec.compare`: the Mann-Whitney comparison on known samples, the loader's checks, and the rules' view."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.compare import compare_samples
from daemon.compare_measure import Side, measure_comparison
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rules.evaluate import EvaluationState, RuleStatus, evaluate
from daemon.rules.loader import load_file
from daemon.rules.model import Action, BaselineMode, ComparisonSpec, Direction, RollbackPolicy, Source
from daemon.signals.promapi import MAX_RANGE_POINTS, PrometheusAnswerTooLarge, PrometheusClient

SPEC = ComparisonSpec("latency", "p95_latency", BaselineMode.CONCURRENT, Source("t.yaml", 1))

POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {name: web}
spec:
  selector: {}
  signals:
    p95_latency:
      prometheus: {query: 'histogram_quantile(0.95, sum by (le) (rate(x{pod=~"{{podPrefix}}.*"}[1m])))'}
    health:
      http: {url: "http://web:8000/health"}
  compare:
    latency: %s
  rules:
    - name: slower
      when: "%s"
      action: review
"""

GOOD = ("{signal: p95_latency, baseline: concurrent, test: mann-whitney, direction: increase, confidence: 0.99, "
        "minSamples: 10, margin: 0.2, step: 30s}")


def _load(tmp_path: Path, compare: str, when: str = "latency.worse") -> tuple[list[str], list[RollbackPolicy]]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY % (compare, when))
    result = load_file(path)
    return [str(e).removeprefix(f"{path}:") for e in result.errors], list(result.policies)


def test_a_clearly_larger_sample_is_worse_with_the_p_value_and_effect_scipy_gives() -> None:
    new, base = [float(x) for x in range(11, 31)], [float(x) for x in range(1, 21)]
    measured = compare_samples(SPEC, new, base)
    assert (measured.phase, measured.value) == (Phase.OK, True), measured
    assert measured.details["p"] == pytest.approx(2.6062748103018758e-05), measured.details
    assert measured.details["effect"] == pytest.approx((20.5 - 10.5) / 10.5), measured.details
    assert measured.details["superiority"] == pytest.approx(350 / 400), measured.details
    assert measured.details["samples"] == 20.0, measured.details
    assert measured.message == ("median 20.5 vs 10.5 of the baseline: +95% (margin 10%), p=2.61e-05 (one-sided "
                                "Mann-Whitney U, 20 and 20 samples, confidence 0.95): worse"), measured.message


def test_decrease_is_worse_when_the_new_side_is_smaller_and_not_when_it_is_larger() -> None:
    spec = ComparisonSpec("rps", "rps", BaselineMode.STABLE, Source("t.yaml", 1), Direction.DECREASE, min_samples=5)
    smaller = compare_samples(spec, [1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0])
    assert (smaller.value, smaller.details["p"]) == (True, pytest.approx(0.003968253968253968)), smaller
    assert smaller.details["effect"] == pytest.approx(5 / 8), smaller.details
    larger = compare_samples(spec, [6.0, 7.0, 8.0, 9.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert larger.value is False, larger
    assert larger.details["p"] > 0.9, larger


def test_a_significant_difference_smaller_than_the_margin_is_not_worse() -> None:
    new, base = [100.0 + x / 10 for x in range(20)], [99.0 + x / 10 for x in range(20)]
    measured = compare_samples(SPEC, new, base)
    assert measured.details["p"] < 0.05, measured
    assert measured.value is False, measured
    assert measured.message.endswith(": within the margin"), measured.message


def test_too_few_usable_samples_is_inconclusive_never_a_pass() -> None:
    # A handful of requests: most steps of a ratio of rates are 0/0 (NaN), whatever their values would be.
    new = [5.0, 5.0, 5.0, *([math.nan] * 40)]
    measured = compare_samples(SPEC, new, [0.1] * 40)
    assert measured == Measurement(Phase.INCONCLUSIVE, None, "too few samples to compare: 3 of the new revision and "
                                   "40 of the baseline, 20 needed on each side (minSamples)",
                                   details={"newSamples": 3.0, "baselineSamples": 40.0, "samples": 3.0})


def test_a_zero_baseline_median_is_inconclusive() -> None:
    measured = compare_samples(SPEC, [1.0] * 20, [0.0] * 20)
    assert measured.phase is Phase.INCONCLUSIVE, measured
    assert measured.message == "the baseline's median is 0: a change relative to nothing is undefined"


def test_scipy_is_loaded_only_by_a_comparison() -> None:
    # A policy without `compare` never calls compare_samples, so importing the daemon must not load scipy.
    import subprocess

    code = "import daemon.cli, daemon.measure, daemon.analysis, sys; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", out


def test_the_loader_reads_every_field(tmp_path: Path) -> None:
    errors, (policy,) = _load(tmp_path, GOOD)
    assert errors == []
    assert policy.comparisons == {"latency": ComparisonSpec(
        "latency", "p95_latency", BaselineMode.CONCURRENT, Source(str(tmp_path / "p.yaml"), 12), Direction.INCREASE,
        0.99, 10, 0.2, 30.0)}
    assert policy.rules[0].when.comparisons == frozenset({"latency"})


@pytest.mark.parametrize(("compare", "when", "expected"), [
    ("{signal: p95, baseline: stable, test: mann-whitney}", "latency.worse",
     '12: spec.compare.latency.signal: unknown signal "p95" (known signals: health, p95_latency)'),
    ("{signal: health, baseline: stable, test: mann-whitney}", "latency.worse",
     '12: spec.compare.latency.signal: signal "health" is not a prometheus signal: only a query can be sampled '
     "over a window"),
    ("{signal: p95_latency, baseline: previous, test: mann-whitney}", "latency.worse",
     '12: spec.compare.latency.baseline: "previous" is not a choice here (use concurrent or stable)'),
    ("{signal: p95_latency, baseline: stable, test: t-test}", "latency.worse",
     '12: spec.compare.latency.test: "t-test" is not a choice here (use mann-whitney)'),
    ("{signal: p95_latency, baseline: stable, test: mann-whitney, confidence: 95}", "latency.worse",
     "12: spec.compare.latency.confidence: 95 is out of range: use a number between 0 and 1, such as 0.95"),
    ("{signal: p95_latency, baseline: stable, test: mann-whitney, minSamples: 2}", "latency.worse",
     "12: spec.compare.latency.minSamples: 2 is out of range: use 5 to 1000 (fewer samples cannot show a "
     "significant difference)"),
    ("{signal: p95_latency, baseline: stable, test: mann-whitney, margin: -0.1}", "latency.worse",
     "12: spec.compare.latency.margin: -0.1 is out of range: use 0 or more (0.1 is 10% worse)"),
    ("{signal: p95_latency, baseline: stable}", "latency.worse",
     "12: spec.compare.latency.test: required field is missing"),
    (GOOD, "latency.worst", '15: spec.rules[0].when: comparison "latency" has no field "worst" at column 1 '
                            "(use latency.worse, latency.p, latency.effect, latency.samples)"),
    (GOOD, "latency", '15: spec.rules[0].when: comparison "latency" is not a value at column 1 '
                      "(use latency.worse, latency.p, latency.effect, latency.samples)"),
])
def test_loader_errors_name_the_field_and_the_fix(tmp_path: Path, compare: str, when: str, expected: str) -> None:
    errors, _ = _load(tmp_path, compare, when)
    assert errors == [expected]


def test_a_comparison_cannot_take_a_signals_name(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text((POLICY % (GOOD, "health.ok")).replace("    latency: {", "    health: {"))
    assert [str(e).removeprefix(f"{path}:") for e in load_file(path).errors] == [
        '12: spec.compare.health: "health" is already the name of a signal: give the comparison its own name']


def test_rules_see_worse_p_effect_samples_and_hold_while_inconclusive(tmp_path: Path) -> None:
    _, (policy,) = _load(tmp_path, GOOD, "latency.worse && latency.p < 0.01 && latency.samples >= 20.0")
    health = Measurement(Phase.OK, True, "ok")
    worse = compare_samples(SPEC, [float(x) for x in range(11, 31)], [float(x) for x in range(1, 21)])
    verdict, _ = evaluate(policy, {"health": health, "latency": worse}, {}, EvaluationState(), 100.0)
    (result,) = verdict.rules
    assert (verdict.action, result.status) == (Action.REVIEW, RuleStatus.MATCHED), verdict
    assert result.values == {"latency.worse": True, "latency.p": pytest.approx(2.6e-05, rel=0.01),
                             "latency.effect": pytest.approx(10 / 10.5), "latency.samples": 20.0}, result.values

    few = compare_samples(SPEC, [5.0, 5.0], [0.1] * 30)
    verdict, _ = evaluate(policy, {"health": health, "latency": few}, {}, EvaluationState(), 100.0)
    (result,) = verdict.rules
    assert (result.status, result.unavailable) == (RuleStatus.HELD, Phase.INCONCLUSIVE), result
    assert result.message == (
        "slower: cannot evaluate latency.worse && latency.p < 0.01 && latency.samples >= 20.0 (latency is "
        "inconclusive: too few samples to compare: 2 of the new revision and 30 of the baseline, 20 needed on each "
        "side (minSamples)) for 0s: review (onInconclusive: hold)"), result.message


async def _range_api(answer: dict[str, Any], seen: list[dict[str, str]]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/v1/query_range", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _matrix(*series: list[str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"pod": f"p{i}"}, "values": [[1000 + t, v] for t, v in enumerate(values)]}
        for i, values in enumerate(series)]}}


async def test_range_queries_ask_for_at_most_a_thousand_points_and_refuse_more() -> None:
    seen: list[dict[str, str]] = []
    runner, url = await _range_api(_matrix(["0.1", "NaN", "0.3"]), seen)
    try:
        async with aiohttp.ClientSession() as session:
            client = PrometheusClient(url, session)
            (series,) = await client.query_range("q", start=0.0, end=100_000.0, step=15.0)
            assert series.values[::2] == (0.1, 0.3), series
            assert math.isnan(series.values[1]), series
            # A window of 100000 s at 15 s would be 6667 points: the newest 1000 are asked for.
            assert (seen[0]["start"], seen[0]["end"], seen[0]["step"]) == ("85015.000", "100000.000", "15"), seen
    finally:
        await runner.cleanup()

    runner, url = await _range_api(_matrix(["1"] * (MAX_RANGE_POINTS + 1)), seen)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PrometheusAnswerTooLarge) as raised:
                await PrometheusClient(url, session).query_range("q", start=0.0, end=10.0, step=1.0)
            assert str(raised.value) == (f"Prometheus at {url} answered 1001 points for one series, more than the "
                                         "1000 asked for")
    finally:
        await runner.cleanup()


async def test_a_comparison_of_a_query_with_several_series_is_inconclusive() -> None:
    runner, url = await _range_api(_matrix(["1"] * 30, ["2"] * 30), [])
    ctx = SignalContext("staging", "web", 2, "new222", "web-new222-", {}, 1000.0)
    old = SignalContext("staging", "web", 1, "old111", "web-old111-", {}, 1000.0)
    try:
        async with aiohttp.ClientSession() as session:
            measured = await measure_comparison(
                SPEC, 'x{pod=~"{{podPrefix}}.*"}', client=PrometheusClient(url, session),
                new=Side(ctx, 1000.0, 1300.0, "revision 2"), baseline=Side(old, 1000.0, 1300.0, "revision 1"))
    finally:
        await runner.cleanup()
    assert measured == Measurement(Phase.INCONCLUSIVE, None, "latency: the query returned 2 series for revision 2, "
                                   "which is ambiguous: aggregate it to one value, e.g. sum(...) or max(...)")
