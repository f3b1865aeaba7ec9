"""The demo timeline's analysis lines (`sim.demo.timeline`): one per evaluation, timers as of that evaluation."""

from __future__ import annotations

from typing import Any

from sim.demo.timeline import EvaluationLines


def _document(*, generated_at: str, evaluations: int, evaluated_at: str, pending: float | None,
              error_rate: float = 0.12, state: str = "analysing") -> dict[str, Any]:
    """An `/api/v2/analyses` document as the daemon serves it, with one live analysis."""
    rule = {"name": "error-rate-over-5pct", "action": "rollback", "forSeconds": 6.0,
            "status": "idle" if pending is None else "pending", "pendingSeconds": pending}
    return {"apiVersion": "rollguard.io/v2", "kind": "AnalysisList", "generatedAt": generated_at, "items": [{
        "namespace": "staging", "deployment": "backend", "revision": 3, "state": state, "live": True,
        "evaluations": evaluations, "lastEvaluationAt": evaluated_at,
        "signals": [{"name": "error_rate", "phase": "ok", "value": error_rate},
                    {"name": "health", "phase": "error", "value": None}],
        "rules": [rule], "verdict": {"action": "pass", "reason": "no rule matched", "rule": None}}]}


def test_a_pending_timer_counting_between_evaluations_prints_nothing_new() -> None:
    lines = EvaluationLines()
    polls = [
        _document(generated_at="2026-12-01T10:00:00.200Z", evaluations=4, evaluated_at="2026-12-01T10:00:00.000Z",
                  pending=2.2),
        # The next poll, before the next evaluation: the same facts, the timer 1 s further.
        _document(generated_at="2026-12-01T10:00:01.150Z", evaluations=4, evaluated_at="2026-12-01T10:00:00.000Z",
                  pending=3.15),
        _document(generated_at="2026-12-01T10:00:02.100Z", evaluations=5, evaluated_at="2026-12-01T10:00:02.000Z",
                  pending=4.1),
    ]
    printed = [line for poll in polls if (line := lines.line(poll)) is not None]
    assert printed == [
        "rev 3 eval #4: error_rate=0.12, health=error → pending error-rate-over-5pct 2s/6s",
        "rev 3 eval #5: error_rate=0.12, health=error → pending error-rate-over-5pct 4s/6s",
    ]


def test_the_timer_is_the_one_of_the_evaluation_not_of_the_poll() -> None:
    # Polled 1.9 s after the evaluation: the rule had been pending 3 s when it was evaluated, not 4.9 s.
    line = EvaluationLines().line(_document(generated_at="2026-12-01T10:00:01.900Z", evaluations=2,
                                            evaluated_at="2026-12-01T10:00:00.000Z", pending=4.9))
    assert line == "rev 3 eval #2: error_rate=0.12, health=error → pending error-rate-over-5pct 3s/6s"


def test_no_line_without_a_live_analysis_or_a_reading() -> None:
    lines = EvaluationLines()
    assert lines.line({"items": []}) is None
    finished = _document(generated_at="2026-12-01T10:00:00Z", evaluations=9, evaluated_at="2026-12-01T10:00:00Z",
                         pending=None, state="passed")
    assert lines.line(finished) is None
    idle = _document(generated_at="2026-12-01T10:00:00Z", evaluations=1, evaluated_at="2026-12-01T10:00:00Z",
                     pending=None, error_rate=0.01)
    assert lines.line(idle) == "rev 3 eval #1: error_rate=0.01, health=error → pass"
