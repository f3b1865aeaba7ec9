"""CEL `when` expressions: what SREs can write, the exact load-time errors, and evaluation with missing data."""

from __future__ import annotations

import pytest

from daemon.rules.expressions import (
    Activation,
    CompiledExpression,
    EvaluationError,
    ExpressionError,
    MissingValue,
    SignalType,
    SignalValue,
    compile_expression,
    is_identifier,
)

SIGNALS = {
    "error_rate": SignalType.NUMBER,
    "p95_latency": SignalType.NUMBER,
    "log_errors": SignalType.NUMBER,
    "health": SignalType.BOOL,
    "ws": SignalType.BOOL,
}
BASELINES = frozenset({"p95_latency"})
KNOWN = "known signals: error_rate, health, log_errors, p95_latency, ws"


def _compile(text: str) -> CompiledExpression:
    return compile_expression(text, SIGNALS, baselines=BASELINES)


def _errors(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ExpressionError) as caught:
        _compile(text)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "signals", "baselines"),
    [
        ("error_rate > 0.05", {"error_rate"}, set()),
        ("!health.ok || !ws.ok", {"health", "ws"}, set()),
        ("p95_latency > baseline.p95_latency * 1.5", {"p95_latency"}, {"p95_latency"}),
        ("log_errors > 0", {"log_errors"}, set()),
        ("error_rate.value >= 1 && error_rate.ok", {"error_rate"}, set()),
        ("health == false || health.value != true", {"health"}, set()),
        ("log_errors == 0 || 3 < log_errors", {"log_errors"}, set()),
        ('error_rate > 0.05 // "ws.ok" in a comment\n && "p95_latency" != ""', {"error_rate"}, set()),
    ],
)
def test_design_examples_compile_and_name_their_inputs(text: str, signals: set[str], baselines: set[str]) -> None:
    compiled = _compile(text)
    assert compiled.text == text
    assert compiled.signals == signals
    assert compiled.baselines == baselines


def test_design_example_evaluates() -> None:
    compiled = _compile("error_rate > 0.05 && !health.ok || p95_latency > baseline.p95_latency * 1.5")
    activation = Activation(
        {
            "error_rate": SignalValue(0.02, True),
            "health": SignalValue(True, True),
            "p95_latency": SignalValue(0.31, True),
        },
        {"p95_latency": 0.2},
    )
    assert compiled.evaluate(activation) is True
    slower_baseline = Activation(activation.signals, {"p95_latency": 0.3})
    assert compiled.evaluate(slower_baseline) is False


def test_int_literals_compare_with_numbers() -> None:
    compiled = _compile("log_errors > 0")
    assert compiled.evaluate(Activation({"log_errors": SignalValue(3.0, True)})) is True
    assert compiled.evaluate(Activation({"log_errors": SignalValue(0.0, True)})) is False


def test_ok_is_separate_from_value() -> None:
    compiled = _compile("!error_rate.ok")
    assert compiled.evaluate(Activation({"error_rate": SignalValue(0.01, False)})) is True


def test_missing_input_that_does_not_matter_is_absorbed() -> None:
    compiled = _compile("!health.ok || !ws.ok")
    assert compiled.evaluate(Activation({"health": SignalValue(False, False)})) is True
    with pytest.raises(MissingValue) as caught:
        compiled.evaluate(Activation({"health": SignalValue(True, True)}))
    assert caught.value.name == "ws"


def test_missing_baseline_is_reported_by_name() -> None:
    compiled = _compile("p95_latency > baseline.p95_latency * 1.5")
    with pytest.raises(MissingValue) as caught:
        compiled.evaluate(Activation({"p95_latency": SignalValue(1.0, True)}))
    assert caught.value.name == "baseline.p95_latency"


def test_runtime_errors_are_evaluation_errors() -> None:
    compiled = _compile("int(error_rate) / 0 > 1")
    with pytest.raises(EvaluationError, match="divide by zero"):
        compiled.evaluate(Activation({"error_rate": SignalValue(1.0, True)}))


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "error_rate >> 0.05",
            [
                (
                    1,
                    13,
                    "syntax error at column 13: extraneous input '>' expecting {'[', '{', '(', '.', '-', '!', "
                    "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
                )
            ],
        ),
        ("error_rat > 0.05", [(1, 1, f'unknown signal "error_rat" at column 1 (did you mean error_rate? {KNOWN})')]),
        (
            "nope > 1 || latency > 2",
            [
                (1, 1, f'unknown signal "nope" at column 1 ({KNOWN})'),
                (1, 13, f'unknown signal "latency" at column 13 (did you mean p95_latency? {KNOWN})'),
            ],
        ),
        ('error_rate > "x"', [(1, 12, "type error at column 12: operator > cannot be applied to (double, string)")]),
        (
            "error_rate * 2 > 0.1",
            [
                (
                    1,
                    12,
                    "type error at column 12: operator * cannot be applied to (double, int) "
                    "(CEL arithmetic does not mix int and double: write 2.0, not 2)",
                )
            ],
        ),
        ("health > 0", [(1, 8, "type error at column 8: operator > cannot be applied to (bool, int)")]),
        ("error_rate", [(1, 1, "must be a condition (true or false), but it is a double")]),
        (
            "baseline.error_rate > 0.1",
            [
                (
                    1,
                    1,
                    'baseline.error_rate at column 1: signal "error_rate" has no baseline '
                    "(add baseline: previous to its prometheus query)",
                )
            ],
        ),
        (
            "baseline.health",
            [(1, 1, 'baseline.health at column 1: signal "health" has no baseline (only prometheus signals have one)')],
        ),
        ("baseline > 1.0", [(1, 1, "baseline needs a signal name at column 1: write baseline.<signal>")]),
        (
            "!health.okay",
            [(1, 8, 'signal "health" has no field "okay" at column 8 (use health, health.ok or health.value)')],
        ),
        ("rate(error_rate) > 1.0", [(1, 5, 'unknown function "rate" at column 5')]),
        (
            "error_rate > 0.05 &&\n  ws.okk",
            [(2, 5, 'signal "ws" has no field "okk" at line 2 column 5 (use ws, ws.ok or ws.value)')],
        ),
    ],
)
def test_compile_errors_are_exact(text: str, problems: list[tuple[int, int, str]]) -> None:
    assert _errors(text) == problems


def test_no_signals_defined_is_said_so() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("x > 1", {})
    assert str(caught.value) == 'unknown signal "x" at column 1 (known signals: none defined)'


@pytest.mark.parametrize(
    ("name", "ok"),
    [("error_rate", True), ("_x1", True), ("1x", False), ("baseline", False), ("in", False), ("a.b", False)],
)
def test_signal_names_must_be_cel_identifiers(name: str, ok: bool) -> None:
    assert is_identifier(name) is ok


def test_increase_is_the_relative_change_from_the_baseline() -> None:
    compiled = _compile("increase(p95_latency) > 0.5")
    assert (compiled.signals, compiled.baselines, compiled.increases) == ({"p95_latency"}, set(), {"p95_latency"})
    measured = {"p95_latency": SignalValue(0.16, True)}
    assert compiled.evaluate(Activation(measured, {"p95_latency": 0.1}, {"p95_latency": 0.6})) is True
    assert compiled.evaluate(Activation(measured, {"p95_latency": 0.1}, {"p95_latency": 0.4})) is False


def test_undefined_increase_is_a_missing_value_named_as_written() -> None:
    compiled = _compile("increase(p95_latency) > 0.5")
    with pytest.raises(MissingValue) as caught:
        compiled.evaluate(Activation({"p95_latency": SignalValue(0.16, True)}, {"p95_latency": 0.0}))
    assert caught.value.name == "increase(p95_latency)"


def test_increase_inside_strings_and_comments_is_text() -> None:
    compiled = _compile('increase(p95_latency) > 0.5 && "increase(error_rate)" != "" // increase(ws)')
    assert compiled.increases == {"p95_latency"}


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "increase(error_rate) > 0.5",
            [(1, 1, 'increase(error_rate) at column 1: signal "error_rate" has no baseline '
                    "(add baseline: stable to its prometheus query)")],
        ),
        (
            "error_rate > 0.1 ||\n  increase(p95_latency * 2.0) > 0.5",
            [(2, 3, "increase() takes a signal name at line 2 column 3: write increase(<signal>), "
                    "for example increase(p95_latency) > 0.5")],
        ),
        (
            "increase(health) > 0.5",
            [(1, 9, "type error at column 9: increase() takes a number signal with a baseline, such as a "
                    "prometheus one")],
        ),
    ],
)
def test_increase_compile_errors_are_exact(text: str, problems: list[tuple[int, int, str]]) -> None:
    assert _errors(text) == problems


def test_increase_is_not_a_signal_name() -> None:
    assert is_identifier("increase") is False
