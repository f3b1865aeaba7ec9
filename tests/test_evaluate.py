"""rules.evaluate: `for` timing with test-controlled `now`, held rules, most-severe-wins, state round trips."""

from __future__ import annotations

import json

import pytest

from daemon.measurement import NO_BASELINE, Measurement, Phase
from daemon.rules.evaluate import EvaluationState, RuleState, RuleStatus, Verdict, evaluate
from daemon.rules.expressions import compile_expression
from daemon.rules.model import (
    Action,
    AnalysisTiming,
    BaselineMode,
    HttpSignal,
    LogsSignal,
    PrometheusSignal,
    RollbackPolicy,
    Rule,
    Selector,
    SignalSpec,
    Source,
    Unavailable,
)

SRC = Source("test.yaml", 1)
SIGNALS = {
    "error_rate": SignalSpec("error_rate", PrometheusSignal('up{a="b"}'), SRC),
    "p95_latency": SignalSpec("p95_latency", PrometheusSignal('up{a="b"}', BaselineMode.PREVIOUS), SRC),
    "log_errors": SignalSpec("log_errors", LogsSignal("error"), SRC),
    "health": SignalSpec("health", HttpSignal("http://svc/health"), SRC),
    "ws": SignalSpec("ws", HttpSignal("http://svc/ws"), SRC),
}
MINUTE = 60.0


def rule(
    name: str,
    when: str,
    action: Action,
    for_: float = 0.0,
    *,
    on_inconclusive: Unavailable = Unavailable.HOLD,
    on_error: Unavailable = Unavailable.HOLD,
) -> Rule:
    types = {n: s.type for n, s in SIGNALS.items()}
    baselines = frozenset(n for n, s in SIGNALS.items() if s.has_baseline)
    compiled = compile_expression(when, types, baselines=baselines)
    return Rule(name, compiled, action, SRC, for_, on_inconclusive, on_error)


def policy(*rules: Rule) -> RollbackPolicy:
    return RollbackPolicy("p", Selector(), AnalysisTiming(), SIGNALS, tuple(rules), SRC)


def ok(value: float | bool) -> Measurement:
    return Measurement(Phase.OK, value, "measured")


def failed(value: float | bool) -> Measurement:
    return Measurement(Phase.FAILED, value, "check failed")


INCONCLUSIVE = Measurement(Phase.INCONCLUSIVE, None, "no samples")
ERROR = Measurement(Phase.ERROR, None, "prometheus: connection refused")


class Run:
    """Feeds evaluations in order, carrying the state like the analysis task does."""

    def __init__(self, p: RollbackPolicy) -> None:
        self.policy = p
        self.state = EvaluationState()

    def at(self, now: float, baselines: dict[str, Measurement] | None = None, **measurements: Measurement) -> Verdict:
        verdict, self.state = evaluate(self.policy, measurements, baselines or {}, self.state, now)
        return verdict


def test_for_fires_only_after_the_condition_held_long_enough() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=10 * MINUTE)))
    first = run.at(0.0, error_rate=ok(0.2))
    assert (first.action, first.rules[0].status) == (Action.PASS, RuleStatus.PENDING)
    assert first.rules[0].message == "errors: error_rate > 0.05 true for 0s of 10m (error_rate=0.2)"
    assert run.at(9 * MINUTE + 59.999, error_rate=ok(0.3)).action is Action.PASS
    fired = run.at(10 * MINUTE, error_rate=ok(0.3))
    assert (fired.action, fired.rules[0].status) == (Action.ROLLBACK, RuleStatus.MATCHED)
    assert fired.reason == "errors: error_rate > 0.05 held for 10m (error_rate=0.3)"
    assert fired.rules[0].values == {"error_rate": 0.3}
    assert fired.deciding == (fired.rules[0],)


def test_one_false_evaluation_resets_the_for_timer() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=10 * MINUTE)))
    run.at(0.0, error_rate=ok(0.2))
    cleared = run.at(5 * MINUTE, error_rate=ok(0.01))
    assert cleared.rules[0].status is RuleStatus.CLEAR
    assert run.state.rule("errors") == RuleState()
    run.at(6 * MINUTE, error_rate=ok(0.2))
    assert run.at(15 * MINUTE, error_rate=ok(0.2)).action is Action.PASS, "timer restarted at 6m"
    assert run.at(16 * MINUTE, error_rate=ok(0.2)).action is Action.ROLLBACK


def test_rule_without_for_fires_at_once() -> None:
    run = Run(policy(rule("minor", "log_errors > 0", Action.NOTIFY)))
    verdict = run.at(0.0, log_errors=ok(3))
    assert verdict.action is Action.NOTIFY
    assert verdict.reason == "minor: log_errors > 0 held (log_errors=3)"


def test_most_severe_action_wins() -> None:
    run = Run(
        policy(
            rule("minor", "log_errors > 0", Action.NOTIFY),
            rule("slow", "p95_latency > baseline.p95_latency * 1.5", Action.REVIEW),
            rule("down", "!health.ok || !ws.ok", Action.ROLLBACK),
        )
    )
    verdict = run.at(
        0.0, {"p95_latency": ok(0.1)}, log_errors=ok(1), p95_latency=ok(0.5), health=failed(False), ws=ok(True)
    )
    assert verdict.action is Action.ROLLBACK
    assert [r.action for r in verdict.rules] == [Action.NOTIFY, Action.REVIEW, Action.ROLLBACK]
    assert [r.rule for r in verdict.deciding] == ["down"]
    assert verdict.rules[1].baselines == {"p95_latency": 0.1}
    assert (
        run.at(
            1.0, {"p95_latency": ok(0.1)}, log_errors=ok(1), p95_latency=ok(0.5), health=ok(True), ws=ok(True)
        ).action
        is Action.REVIEW
    )


def test_nothing_matched_passes() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=MINUTE)))
    verdict = run.at(0.0, error_rate=ok(0.2))
    assert (verdict.action, verdict.reason) == (Action.PASS, "no rule matched (pending or held: errors)")
    assert run.at(1.0, error_rate=ok(0.0)).reason == "no rule matched"


@pytest.mark.parametrize("unavailable", [INCONCLUSIVE, ERROR])
def test_unavailable_signal_never_rolls_back_by_default(unavailable: Measurement) -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=MINUTE)))
    actions = [run.at(t, error_rate=unavailable).action for t in (0.0, 30.0, 60.0, 600.0, 6000.0)]
    assert actions == [Action.PASS, Action.PASS, Action.REVIEW, Action.REVIEW, Action.REVIEW]
    held = run.at(6001.0, error_rate=unavailable).rules[0]
    assert held.status is RuleStatus.HELD
    assert held.unavailable is unavailable.phase


def test_hold_message_says_what_is_missing_and_when_it_escalates() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=MINUTE)))
    assert run.at(0.0, error_rate=ERROR).reason == ("no rule matched (pending or held: errors)")
    assert run.at(10.0, error_rate=ERROR).rules[0].message == (
        "errors: cannot evaluate error_rate > 0.05 (error_rate is error: prometheus: connection refused) "
        "for 10s: holding, review after 1m"
    )
    assert run.at(60.0, error_rate=ERROR).reason == (
        "errors: cannot evaluate error_rate > 0.05 (error_rate is error: prometheus: connection refused) "
        "for 1m: review (onError: hold)"
    )


def test_hold_keeps_the_pending_timer_without_firing() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=10 * MINUTE)))
    run.at(0.0, error_rate=ok(0.2))
    held = run.at(5 * MINUTE, error_rate=ERROR)
    assert held.action is Action.PASS
    assert run.state.rule("errors") == RuleState(pending_since=0.0, unavailable_since=5 * MINUTE)
    # Data back and still bad: the timer ran on from 0, and the unavailable timer reset.
    assert run.at(10 * MINUTE, error_rate=ok(0.2)).action is Action.ROLLBACK
    assert run.state.rule("errors") == RuleState(pending_since=0.0)


def test_hold_escalation_never_exceeds_the_rules_own_action() -> None:
    run = Run(policy(rule("minor", "log_errors > 0", Action.NOTIFY)))
    assert run.at(0.0, log_errors=INCONCLUSIVE).action is Action.NOTIFY


def test_missing_measurement_counts_as_inconclusive() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, on_inconclusive=Unavailable.NOTIFY)))
    verdict = run.at(0.0)
    assert verdict.action is Action.NOTIFY
    assert verdict.rules[0].message == (
        "errors: cannot evaluate error_rate > 0.05 (error_rate is inconclusive: not measured): "
        "notify (onInconclusive: notify)"
    )


def test_nan_is_no_data() -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, on_inconclusive=Unavailable.REVIEW)))
    assert run.at(0.0, error_rate=ok(float("nan"))).action is Action.REVIEW


def test_error_takes_precedence_over_inconclusive() -> None:
    r = rule(
        "down",
        "!health.ok && !ws.ok",
        Action.ROLLBACK,
        on_inconclusive=Unavailable.IGNORE,
        on_error=Unavailable.REVIEW,
    )
    run = Run(policy(r))
    assert run.at(0.0, health=ERROR, ws=INCONCLUSIVE).action is Action.REVIEW
    assert run.at(1.0, health=INCONCLUSIVE, ws=INCONCLUSIVE).action is Action.PASS


def test_measured_inputs_that_decide_the_condition_are_enough() -> None:
    run = Run(policy(rule("down", "!health.ok || !ws.ok", Action.ROLLBACK)))
    verdict = run.at(0.0, health=failed(False), ws=ERROR)
    assert verdict.action is Action.ROLLBACK
    assert verdict.rules[0].values == {"health": False, "ws": None}
    cleared = run.at(1.0, health=ok(True), ws=ERROR)
    assert cleared.rules[0].status is RuleStatus.HELD, "ws decides now, and it is unknown"


def test_error_phase_alone_does_not_count_as_a_failed_check() -> None:
    run = Run(policy(rule("down", "!health.ok", Action.ROLLBACK, on_error=Unavailable.IGNORE)))
    assert run.at(0.0, health=ERROR).action is Action.PASS


@pytest.mark.parametrize(
    ("choice", "action", "pending_after"),
    [
        (Unavailable.IGNORE, Action.PASS, 0.0),
        (Unavailable.PASS, Action.PASS, None),
        (Unavailable.REVIEW, Action.REVIEW, 0.0),
        (Unavailable.NOTIFY, Action.NOTIFY, 0.0),
        (Unavailable.HOLD, Action.PASS, 0.0),
    ],
)
def test_unavailable_choices(choice: Unavailable, action: Action, pending_after: float | None) -> None:
    run = Run(policy(rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=MINUTE, on_inconclusive=choice)))
    run.at(0.0, error_rate=ok(0.2))
    assert run.at(10.0, error_rate=INCONCLUSIVE).action is action
    assert run.state.rule("errors").pending_since == pending_after
    # An hour of no data: only hold escalates, and never beyond review.
    later = run.at(3600.0, error_rate=INCONCLUSIVE).action
    assert later is (Action.REVIEW if choice is Unavailable.HOLD else action)


def test_missing_baseline_holds_the_rule() -> None:
    run = Run(
        policy(
            rule(
                "slow",
                "p95_latency > baseline.p95_latency * 1.5",
                Action.REVIEW,
                on_inconclusive=Unavailable.IGNORE,
            )
        )
    )
    verdict = run.at(0.0, {"p95_latency": INCONCLUSIVE}, p95_latency=ok(9.0))
    assert verdict.action is Action.PASS
    assert verdict.rules[0].status is RuleStatus.HELD
    assert verdict.rules[0].baselines == {"p95_latency": None}


def test_runtime_error_is_handled_like_a_signal_error() -> None:
    run = Run(policy(rule("odd", "int(error_rate) / 0 > 1", Action.ROLLBACK, on_error=Unavailable.REVIEW)))
    verdict = run.at(0.0, error_rate=ok(1.0))
    assert verdict.action is Action.REVIEW
    assert verdict.rules[0].unavailable is Phase.ERROR


def test_state_round_trips_through_json_and_resumes_the_timer() -> None:
    p = policy(
        rule("errors", "error_rate > 0.05", Action.ROLLBACK, for_=10 * MINUTE),
        rule("down", "!health.ok", Action.ROLLBACK, for_=MINUTE),
        rule("minor", "log_errors > 0", Action.NOTIFY),
    )
    run = Run(p)
    run.at(100.0, error_rate=ok(0.2), health=ERROR, log_errors=ok(0))
    as_dict = run.state.to_dict()
    assert as_dict == {
        "version": 1,
        "rules": {
            "down": {"pendingSince": None, "unavailableSince": 100.0},
            "errors": {"pendingSince": 100.0, "unavailableSince": None},
        },
    }
    restored = EvaluationState.from_dict(json.loads(json.dumps(as_dict)))
    assert restored == run.state
    # A restarted daemon resumes: the rule fires 10 minutes after the first true evaluation.
    verdict, _ = evaluate(p, {"error_rate": ok(0.2), "health": ok(True), "log_errors": ok(0)}, {}, restored, 700.0)
    assert verdict.action is Action.ROLLBACK


def test_state_of_removed_rules_is_dropped() -> None:
    state = EvaluationState({"gone": RuleState(pending_since=1.0)})
    _, after = evaluate(policy(rule("minor", "log_errors > 0", Action.NOTIFY)), {"log_errors": ok(0)}, {}, state, 2.0)
    assert after == EvaluationState()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2, "rules": {}},
        {"version": 1, "rules": []},
        {"version": 1, "rules": {"x": {"pendingSince": "soon"}}},
        {"version": 1, "rules": {"x": {"pendingSince": True}}},
        {"version": 1, "rules": {"x": 5}},
    ],
)
def test_state_from_bad_dict_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="evaluation state"):
        EvaluationState.from_dict(data)


def test_increase_compares_with_the_baseline_and_shows_both() -> None:
    run = Run(policy(rule("slow", "increase(p95_latency) > 0.5", Action.REVIEW)))
    baseline = {"p95_latency": Measurement(Phase.OK, 0.1, "measured", details={"revision": 3.0})}
    verdict = run.at(0.0, baseline, p95_latency=ok(0.28))
    assert verdict.action is Action.REVIEW
    assert verdict.reason == ("slow: increase(p95_latency) > 0.5 held (p95_latency=0.28, "
                              "baseline.p95_latency=0.1 of revision 3, increase(p95_latency)=+180%)")
    assert run.at(1.0, baseline, p95_latency=ok(0.14)).action is Action.PASS


@pytest.mark.parametrize(
    ("baseline", "why"),
    [
        (Measurement(Phase.OK, 0.0, "measured"),
         "increase(p95_latency) is inconclusive: the baseline is 0: a change relative to nothing is undefined"),
        (INCONCLUSIVE, "baseline.p95_latency is inconclusive: no samples"),
        (None, "baseline.p95_latency is inconclusive: no baseline measured"),
    ],
)
def test_increase_without_a_usable_baseline_is_inconclusive(baseline: Measurement | None, why: str) -> None:
    run = Run(policy(rule("slow", "increase(p95_latency) > 0.5", Action.REVIEW, on_inconclusive=Unavailable.NOTIFY)))
    verdict = run.at(0.0, {"p95_latency": baseline} if baseline else {}, p95_latency=ok(0.28))
    assert verdict.action is Action.NOTIFY
    assert verdict.rules[0].status is RuleStatus.HELD
    assert verdict.reason == (f"slow: cannot evaluate increase(p95_latency) > 0.5 ({why}): "
                              "notify (onInconclusive: notify)")


FIRST_REVISION = Measurement(Phase.INCONCLUSIVE, None, "no earlier revision to compare with",
                             details={NO_BASELINE: 1.0})


@pytest.mark.parametrize("when", ["increase(p95_latency) > 0.5", "p95_latency > baseline.p95_latency * 1.5"])
def test_a_rule_against_a_baseline_that_cannot_exist_is_not_applied(when: str) -> None:
    # The first revision of a Deployment has nothing to be compared with: that is not missing data (no
    # hold, no page at every new Deployment), and no `onInconclusive: ignore` is needed to say so.
    run = Run(policy(rule("slow", when, Action.REVIEW, for_=0.0)))
    for now in (0.0, 60.0, 600.0):
        verdict = run.at(now, {"p95_latency": FIRST_REVISION}, p95_latency=ok(9.0))
        assert verdict.action is Action.PASS
        assert verdict.rules[0].status is RuleStatus.CLEAR
        assert verdict.rules[0].message == (f"slow: not applied: {when} needs baseline.p95_latency, and there is "
                                            "none: no earlier revision to compare with")


def test_a_baseline_that_could_not_be_measured_still_holds_and_escalates() -> None:
    run = Run(policy(rule("slow", "increase(p95_latency) > 0.5", Action.REVIEW, for_=60.0)))
    assert run.at(0.0, {"p95_latency": INCONCLUSIVE}, p95_latency=ok(9.0)).action is Action.PASS
    verdict = run.at(60.0, {"p95_latency": INCONCLUSIVE}, p95_latency=ok(9.0))
    assert verdict.action is Action.REVIEW, verdict.reason
    assert verdict.rules[0].status is RuleStatus.HELD


def test_an_absent_baseline_does_not_excuse_another_input_that_is_missing() -> None:
    when = "increase(p95_latency) > 0.5 || error_rate > 0.1"
    run = Run(policy(rule("slow", when, Action.REVIEW, for_=0.0, on_inconclusive=Unavailable.NOTIFY)))
    verdict = run.at(0.0, {"p95_latency": FIRST_REVISION}, p95_latency=ok(9.0), error_rate=INCONCLUSIVE)
    assert verdict.action is Action.NOTIFY
    assert verdict.rules[0].status is RuleStatus.HELD


def test_with_no_baseline_the_compared_signal_need_not_be_there_yet() -> None:
    # A first revision's latency not scraped yet: the rule cannot apply anyway, so nothing waits or holds.
    run = Run(policy(rule("slow", "increase(p95_latency) > 0.5", Action.REVIEW, for_=0.0)))
    pending = Measurement(Phase.PENDING, None, "no sample yet")
    for now in (0.0, 3600.0):
        verdict = run.at(now, {"p95_latency": FIRST_REVISION}, p95_latency=pending)
        assert (verdict.action, verdict.rules[0].status) == (Action.PASS, RuleStatus.CLEAR), verdict.reason
