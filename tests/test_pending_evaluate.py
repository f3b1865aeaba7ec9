"""rules.evaluate: a PENDING input (data that cannot exist yet) waits quietly until `pending_until`."""

from __future__ import annotations

from daemon.measurement import Measurement, Phase
from daemon.rules.evaluate import EvaluationState, RuleState, RuleStatus, Verdict, evaluate
from daemon.rules.model import Action, RollbackPolicy, Unavailable
from tests.test_evaluate import ERROR, ok, policy, rule

NO_CONTAINER = Measurement(Phase.PENDING, None, "no container of ReplicaSet staging/web-64cd969dd5 has started yet")
GRACE_END = 600.0


class Run:
    """Feeds evaluations in order with a pending grace ending at GRACE_END, as the analysis does."""

    def __init__(self, p: RollbackPolicy) -> None:
        self.policy = p
        self.state = EvaluationState()

    def at(self, now: float, **measurements: Measurement) -> Verdict:
        verdict, self.state = evaluate(self.policy, measurements, {}, self.state, now, pending_until=GRACE_END)
        return verdict


def test_an_immediate_rollback_rule_waits_for_the_first_container_without_paging() -> None:
    run = Run(policy(rule("errors", "log_errors > 0", Action.ROLLBACK)))
    verdict = run.at(0.0, log_errors=NO_CONTAINER)
    assert verdict.action is Action.PASS, verdict
    (result,) = verdict.rules
    assert (result.status, result.unavailable) == (RuleStatus.HELD, Phase.PENDING), result
    assert result.message == ("errors: waiting for data (log_errors is pending: no container of ReplicaSet "
                              "staging/web-64cd969dd5 has started yet); onInconclusive applies if still pending "
                              "in 10m")
    assert run.state.rule("errors") == RuleState(), "no held timer may start while the data cannot exist"
    assert run.at(30.0, log_errors=ok(0)).action is Action.PASS
    assert run.at(45.0, log_errors=ok(2)).action is Action.ROLLBACK


def test_past_the_grace_pending_is_inconclusive_and_the_held_timer_starts_then() -> None:
    run = Run(policy(rule("errors", "log_errors > 0", Action.ROLLBACK, 60.0)))
    assert run.at(GRACE_END - 1, log_errors=NO_CONTAINER).action is Action.PASS
    late = run.at(GRACE_END, log_errors=NO_CONTAINER)
    assert late.action is Action.PASS, late
    assert late.rules[0].unavailable is Phase.INCONCLUSIVE, late
    assert run.state.rule("errors").unavailable_since == GRACE_END
    review = run.at(GRACE_END + 60, log_errors=NO_CONTAINER)
    assert review.action is Action.REVIEW, review
    assert review.reason == ("errors: cannot evaluate log_errors > 0 (log_errors is pending: no container of "
                             "ReplicaSet staging/web-64cd969dd5 has started yet) for 1m: review (onInconclusive: "
                             "hold)")


def test_pending_next_to_an_error_is_the_error() -> None:
    run = Run(policy(rule("mixed", "log_errors > 0 || error_rate > 0.05", Action.ROLLBACK)))
    verdict = run.at(0.0, log_errors=NO_CONTAINER, error_rate=ERROR)
    assert (verdict.action, verdict.rules[0].unavailable) == (Action.REVIEW, Phase.ERROR), verdict


def test_pending_next_to_an_inconclusive_input_is_inconclusive() -> None:
    run = Run(policy(rule("mixed", "log_errors > 0 || error_rate > 0.05", Action.NOTIFY,
                          on_inconclusive=Unavailable.NOTIFY)))
    nan = Measurement(Phase.INCONCLUSIVE, None, "the query returned NaN")
    verdict = run.at(0.0, log_errors=NO_CONTAINER, error_rate=nan)
    assert (verdict.action, verdict.rules[0].unavailable) == (Action.NOTIFY, Phase.INCONCLUSIVE), verdict


def test_without_a_grace_pending_counts_as_inconclusive_at_once() -> None:
    p = policy(rule("errors", "log_errors > 0", Action.ROLLBACK))
    verdict, _ = evaluate(p, {"log_errors": NO_CONTAINER}, {}, EvaluationState(), 0.0)
    assert (verdict.action, verdict.rules[0].unavailable) == (Action.REVIEW, Phase.INCONCLUSIVE), verdict
