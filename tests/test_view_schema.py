"""The words, numbers and documents of `daemon.view`, from real evaluations of the e2e example policy (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.kube.state import STATE_ANNOTATION, AnalysisState
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rollout import Rollout, RolloutId
from daemon.rules.evaluate import EvaluationState, evaluate
from daemon.rules.loader import load_rules
from daemon.rules.model import RollbackPolicy
from daemon.view.collect import v1_views, v2_document
from daemon.view.history import AnalysisHistory
from daemon.view.render import render, sparkline
from daemon.view.schema import Running, analysis_item, analysis_list, gauges_item
from daemon.view.text import rfc3339, show_rule, thresholds
from tests.e2ekit import RULES

T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def policy() -> RollbackPolicy:
    loaded = load_rules([RULES])
    assert not loaded.errors, loaded.errors
    return loaded.policies[0]


def readings(error_rate: float | None, *, prometheus_down: bool = False) -> dict[str, Measurement]:
    if prometheus_down:
        down = Measurement(Phase.ERROR, None, "Prometheus unreachable")
        return {"error_rate": down, "p95_latency": down, "log_errors": Measurement(Phase.OK, 0.0, "0 lines"),
                "health": Measurement(Phase.OK, True, "200"), "ws": Measurement(Phase.OK, True, "PONG")}
    return {"error_rate": Measurement(Phase.OK, error_rate, "ok"), "p95_latency": Measurement(Phase.OK, 0.2, "ok"),
            "log_errors": Measurement(Phase.OK, 0.0, "0 lines"), "health": Measurement(Phase.OK, True, "200"),
            "ws": Measurement(Phase.OK, True, "PONG")}


def test_a_rule_reads_idle_then_pending_with_its_timer_then_fired(policy: RollbackPolicy) -> None:
    rule = next(r for r in policy.rules if r.name == "error-rate-over-5pct")
    baselines = {"p95_latency": Measurement(Phase.OK, 0.1, "ok")}
    state = EvaluationState()
    shown = []
    for tick, rate in enumerate([0.01, 0.12, 0.12, 0.12, 0.12]):
        verdict, state = evaluate(policy, readings(rate), baselines, state, T0 + tick)
        result = next(r for r in verdict.rules if r.rule == rule.name)
        m = readings(rate)
        shown.append(show_rule(rule, result, now=T0 + tick + 0.5, signals=policy.signals, measurements=m).text)
    assert shown == ["idle", "pending 0s of 3s", "pending 1s of 3s", "pending 2s of 3s", "fired"]


def test_a_rule_held_by_prometheus_being_down_says_so(policy: RollbackPolicy) -> None:
    rule = next(r for r in policy.rules if r.name == "error-rate-over-5pct")
    verdict, _ = evaluate(policy, readings(None, prometheus_down=True), {}, EvaluationState(), T0)
    result = next(r for r in verdict.rules if r.rule == rule.name)
    shown = show_rule(rule, result, now=T0, signals=policy.signals, measurements=readings(None, prometheus_down=True))
    assert (shown.status, shown.text) == ("held", "held: prometheus error")


def test_thresholds_are_read_from_the_conditions_and_scale_the_baseline(policy: RollbackPolicy) -> None:
    found = thresholds(policy.rules, {"p95_latency": 0.2})
    assert {name: [(t.rule, t.op, t.value) for t in lines] for name, lines in found.items()} == {
        "error_rate": [("error-rate-over-5pct", ">", 0.05)],
        "p95_latency": [("latency-worse-than-50pct", ">", pytest.approx(0.3))],
        "log_errors": [("minor-errors", ">", 0.0)],
    }
    assert thresholds(policy.rules, {})["p95_latency"][0].value is None, "no baseline: no line"


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert rfc3339(None) is None


def test_sparkline_scales_from_min_to_max_and_leaves_gaps() -> None:
    assert sparkline([0.0, 0.5, 1.0, None, 1.0]) == "▁▅█ █"
    assert sparkline([None, None]) == ""


def _deployment(state: AnalysisState, *, revision: int = 5) -> dict[str, Any]:
    return {"metadata": {"namespace": "staging", "name": "backend", "annotations": {
                STATE_ANNOTATION: state.to_json(), "deployment.kubernetes.io/revision": str(revision)}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "backend:v5"}]}}}}


def test_a_pending_review_is_shown_from_the_state_annotation_after_a_restart() -> None:
    review = AnalysisState(revision=5, pod_template_hash="abc123", started_at=T0, phase="review", decision={
        "action": "review_needed", "rule": "latency-worse-than-50pct", "at": T0 + 40,
        "reason": "latency-worse-than-50pct: p95_latency > baseline.p95_latency * 1.5 held for 3s"})
    doc = v2_document([], {("staging", "backend"): _deployment(review)}, lambda _d: [], now=T0 + 60)
    assert [(i["revision"], i["state"], i["source"], i["images"]["new"]) for i in doc["items"]] == [
        (5, "review", "annotation", ["backend:v5"])]
    assert doc["items"][0]["verdict"] == {"action": "review_needed", "rule": "latency-worse-than-50pct",
                                          "reason": review.decision["reason"]}  # type: ignore[index]
    text = render(doc, target=("staging", "backend"))
    assert text.startswith("staging/backend  revision 5  review  (from the state annotation"), text


def test_one_entry_per_rollout_first_wins_and_finished_ones_expire() -> None:
    def item(revision: int, state: str, ended: float | None) -> dict[str, Any]:
        return {"namespace": "staging", "deployment": "backend", "revision": revision,
                "podTemplateHash": f"h{revision}", "state": state, "live": ended is None, "endedAt": rfc3339(ended)}

    doc = analysis_list([item(3, "analysing", None), item(2, "superseded", T0 - 10), item(2, "analysing", T0 - 11),
                         item(1, "passed", T0 - 7200)], now=T0)
    assert [(i["revision"], i["state"]) for i in doc["items"]] == [(3, "analysing"), (2, "superseded")]
    assert (doc["apiVersion"], doc["kind"], doc["generatedAt"]) == ("rollguard.io/v2", "AnalysisList", rfc3339(T0))


def test_v1_keeps_its_shape_one_entry_per_rollout_with_the_recorded_stage() -> None:
    done = AnalysisState(revision=5, pod_template_hash="abc123", started_at=T0, phase="rolled-back")
    view = {"namespace": "staging", "deployment": "backend", "revision": 5, "podTemplateHash": "abc123",
            "phase": "rolling-back", "detail": {"live": False}}
    listed = v1_views([view, {**view, "phase": "analysing"}], {("staging", "backend"): _deployment(done)}, now=T0)
    assert listed == [{"namespace": "staging", "deployment": "backend", "revision": 5, "podTemplateHash": "abc123",
                       "phase": "rolled-back"}]
    json.dumps(listed)


def test_history_marks_pending_and_fired_moments(policy: RollbackPolicy) -> None:
    history = AnalysisHistory()
    state = EvaluationState()
    for tick, rate in enumerate([0.01, 0.12, 0.12, 0.12, 0.12]):
        verdict, state = evaluate(policy, readings(rate), {}, state, T0 + tick)
        history.record(T0 + tick, readings(rate), verdict)
    marks = [(m.at - T0, m.event) for m in history.marks if m.rule == "error-rate-over-5pct"]
    assert marks == [(1.0, "pending"), (4.0, "fired")]
    assert [p.value for p in history.signals["error_rate"]] == [0.01, 0.12, 0.12, 0.12, 0.12]


def test_the_gauges_item_is_the_view_item_less_what_the_metrics_do_not_read(policy: RollbackPolicy) -> None:
    """The per-Deployment metrics are set after every evaluation from `gauges_item`, a cheap part of
    `analysis_item`: it must agree with it field for field, whatever the rules' state."""
    ctx = SignalContext("staging", "backend", 4, "h4", "backend-h4-", {"app": "backend"}, T0)
    rollout = Rollout(RolloutId("staging", "backend", 4, "h4"), policy, ctx, None, T0)
    history = AnalysisHistory()
    state = EvaluationState()
    seen = []
    ticks = [readings(0.01), readings(0.12), readings(None, prometheus_down=True), readings(0.12), readings(0.12)]
    for tick, measured in enumerate([None, *ticks]):
        verdict = None
        if measured is not None:
            verdict, state = evaluate(policy, measured, {}, state, T0 + tick)
            history.record(T0 + tick, measured, verdict)
        for ended_at in (None, T0 + tick + 0.25):
            run = Running(rollout, AnalysisState(revision=4, phase="analysing"), history, verdict, tick, None, ended_at)
            item = analysis_item(run, now=T0 + tick + 0.5, with_history=False)
            expected = {"state": item["state"],
                        "signals": [{"name": s["name"], "value": s["value"]} for s in item["signals"]],
                        "rules": [{"name": r["name"], "pendingSeconds": r["pendingSeconds"]} for r in item["rules"]]}
            assert gauges_item(run, now=T0 + tick + 0.5) == expected, f"tick {tick}, ended {ended_at}"
            seen.append(expected)
    assert any(r["pendingSeconds"] for e in seen for r in e["rules"]), "a pending rule was compared"
    assert any(s["value"] is None for e in seen for s in e["signals"]), "a missing reading was compared"
