"""Rule conditions (`when:`) in CEL, compiled and type-checked when the rule file is loaded.

The library (cel-expr-python, Google's cel-cpp; see bench/CEL.md for why) stays behind
`compile_expression` and `CompiledExpression.evaluate`, so it can be swapped.

What a `when` can name — every signal `x` of the policy gives:

* `x`: its value. A number (CEL `double`) for Prometheus and logs signals, a bool for HTTP and
  WebSocket checks (true when the check passed).
* `x.ok`: bool, true when the measurement's phase is OK (for a check: the check passed).
* `x.value`: the same as `x`, for readers who prefer it spelled out.
* `baseline.x`: the value of the same query for the baseline revision; only for Prometheus
  signals with a `baseline`.
* `increase(x)`: the relative change from the baseline, `(x - baseline.x) / |baseline.x|` (0.5 is
  50% worse for a latency); only for a signal with a `baseline`, and only on a signal's name. A
  missing or zero baseline leaves it without a value (the rule is then inconclusive): a change
  relative to nothing is undefined, not infinite.
* `c.worse` (bool), `c.p`, `c.effect`, `c.samples` (doubles): the result of the statistical
  comparison `c` of `spec.compare` (`daemon.compare`); absent while it is inconclusive.

These are declared as CEL variables with dotted names (`health.ok` is one variable), which CEL's
name resolution supports, so `error_rate > 0.05`, `!health.ok || !ws.ok`,
`p95_latency > baseline.p95_latency * 1.5` and `log_errors > 0` are checked with exact types and
error columns, without rewriting the text. Numbers compare across int and double (`log_errors > 0`),
as in current CEL; arithmetic does not mix them, as in every CEL (write `* 2.0`).

A signal that could not be measured is left out of the activation. CEL's `&&` and `||` absorb
errors when the other side decides the result, so `!health.ok || !ws.ok` is still true when
`health` failed and `ws` is unknown; when the missing value matters, `evaluate` raises
`MissingValue` and the caller applies the rule's `onInconclusive` / `onError`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cel_expr_python import cel

from daemon.rules.celnames import (
    BASELINE,
    IDENTIFIER,
    INCREASE,
    Call,
    chain_at,
    increase_calls,
    name_chains,
    references,
)

RESERVED = frozenset(
    {
        *("true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if"),
        *("import", "let", "loop", "package", "namespace", "return", "var", "void", "while"),
    }
)
"""Words CEL reserves; a signal cannot be named after one."""

_CEL_ERROR = re.compile(r"ERROR: <input>:(?P<line>\d+):(?P<column>\d+): (?P<message>.*?)(?:\n \||\Z)", re.S)
_MISSING = re.compile(r'No value with name "(?P<name>[^"]+)" found')


class SignalType(StrEnum):
    """How a signal's value appears in CEL."""

    NUMBER = "number"
    """A CEL double: Prometheus query results, log line counts."""
    BOOL = "bool"
    """A CEL bool: HTTP and WebSocket checks (true = the check passed)."""


@dataclass(frozen=True)
class ExpressionProblem:
    """One thing wrong with an expression, positioned inside the expression text."""

    line: int
    """1-based line within the expression (expressions are usually one line)."""
    column: int
    """1-based column within that line."""
    message: str
    """What is wrong, already naming the position (`... at column 13: ...`)."""


class ExpressionError(ValueError):
    """An expression does not compile or does not type-check; `problems` lists every error CEL found."""

    def __init__(self, problems: tuple[ExpressionProblem, ...]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class EvaluationError(RuntimeError):
    """An expression failed at run time for a reason other than a missing value (e.g. integer division by 0)."""


class MissingValue(EvaluationError):
    """The result depends on a signal or baseline that has no value in the activation."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} has no value")
        self.name = name


@dataclass(frozen=True)
class SignalValue:
    """A measured signal as CEL sees it."""

    value: float | bool
    """The value bound to `x` and `x.value`: float for NUMBER signals, bool for BOOL signals."""
    ok: bool
    """The value bound to `x.ok`."""


COMPARISON_FIELDS: Mapping[str, Any] = {"worse": cel.Type.BOOL, "p": cel.Type.DOUBLE, "effect": cel.Type.DOUBLE,
                                        "samples": cel.Type.DOUBLE}
"""The fields of a comparison `c` in CEL (`c.worse`, ...) and their types."""


@dataclass(frozen=True)
class ComparisonValue:
    """A conclusive statistical comparison as CEL sees it (`daemon.compare` says what each field means)."""

    worse: bool
    p: float
    effect: float
    samples: float


@dataclass(frozen=True)
class Activation:
    """The values one evaluation sees. Signals that could not be measured are simply absent."""

    signals: Mapping[str, SignalValue] = field(default_factory=dict)
    """Measured signals by name."""
    baselines: Mapping[str, float] = field(default_factory=dict)
    """Baseline values by signal name, bound to `baseline.<name>`."""
    increases: Mapping[str, float] = field(default_factory=dict)
    """Relative changes by signal name, bound to `increase(<name>)`; absent when undefined."""
    comparisons: Mapping[str, ComparisonValue] = field(default_factory=dict)
    """Conclusive comparisons by name, bound to `<name>.worse` etc.; absent while inconclusive."""


@dataclass(frozen=True, eq=False)
class CompiledExpression:
    """A checked `when` expression, ready to evaluate many times."""

    text: str
    """The expression as written."""
    signals: frozenset[str]
    """Signals the expression names (`x`, `x.ok` or `x.value`)."""
    baselines: frozenset[str]
    """Signals whose baseline the expression names (`baseline.x`)."""
    increases: frozenset[str]
    """Signals whose relative change the expression names (`increase(x)`)."""
    comparisons: frozenset[str]
    """Comparisons the expression names (`c.worse`, `c.p`, ...)."""
    _types: Mapping[str, SignalType]
    _program: Any

    def evaluate(self, activation: Activation) -> bool:
        """The condition's truth for these values. Raises `MissingValue` when the result needs a signal
        or baseline absent from `activation`, `EvaluationError` for other run-time errors."""
        data: dict[str, float | bool] = {}
        for name in self.signals:
            bound = activation.signals.get(name)
            if bound is None:
                continue
            value = float(bound.value) if self._types[name] is SignalType.NUMBER else bool(bound.value)
            data[name] = value
            data[f"{name}.value"] = value
            data[f"{name}.ok"] = bool(bound.ok)
        for name in self.baselines:
            if name in activation.baselines:
                data[f"{BASELINE}.{name}"] = float(activation.baselines[name])
        for name in self.increases:
            if name in activation.increases:
                data[f"{INCREASE}.{name}"] = float(activation.increases[name])
        for name in self.comparisons:
            compared = activation.comparisons.get(name)
            if compared is not None:
                data[f"{name}.worse"] = bool(compared.worse)
                data.update({f"{name}.{key}": float(getattr(compared, key)) for key in ("p", "effect", "samples")})
        result = self._program.eval(data=data)
        if result.type() == cel.Type.BOOL:
            return bool(result.value())
        detail = str(result.value())
        missing = _MISSING.search(detail)
        if missing:
            name = missing.group("name")
            if name.split(".")[0] in self.comparisons:
                raise MissingValue(name.split(".")[0])
            if name.startswith(INCREASE + "."):
                raise MissingValue(f"{INCREASE}({name.removeprefix(INCREASE + '.')})")
            raise MissingValue(name.removesuffix(".ok").removesuffix(".value"))
        raise EvaluationError(f"{self.text!r} failed: {detail}")


def compile_expression(
    text: str, signals: Mapping[str, SignalType], *, baselines: frozenset[str] = frozenset(),
    comparisons: frozenset[str] = frozenset(),
) -> CompiledExpression:
    """Parse and type-check `text` against the policy's signals; `baselines` names the signals that
    have a baseline, `comparisons` the policy's comparisons. Raises `ExpressionError` with every
    problem found, positioned in `text`."""
    env = _environment(frozenset(signals.items()), baselines, comparisons)
    try:
        program = env.compile(text)
    except RuntimeError as exc:
        raise ExpressionError(_problems(str(exc), text, signals, baselines, comparisons)) from None
    result_type = program.return_type()
    if result_type != cel.Type.BOOL:
        type_name = str(result_type.name()).lower()
        raise ExpressionError(
            (ExpressionProblem(1, 1, f"must be a condition (true or false), but it is a {type_name}"),)
        )
    calls = increase_calls(text)
    problems = tuple(_increase_problem(text, call, signals, baselines) for call in calls)
    if any(problems):
        raise ExpressionError(tuple(p for p in problems if p is not None))
    if calls:
        # `increase(x)` is checked as a function call (errors positioned in the text as written) but
        # evaluated as the variable `increase.x`, which the evaluation binds only when it is defined.
        rewritten = text
        for call in reversed(calls):
            rewritten = f"{rewritten[:call.start]}{INCREASE}.{call.signal}{rewritten[call.end:]}"
        program = env.compile(rewritten)
    named, named_baselines = references(text, signals)
    increases = frozenset(call.signal for call in calls if call.signal is not None)
    compared = frozenset(chain[0] for chain in name_chains(text) if chain[0] in comparisons)
    return CompiledExpression(text, named, named_baselines, increases, compared, dict(signals), program)


def is_identifier(name: str) -> bool:
    """True when `name` can name a signal in CEL: an identifier that is not reserved and not `baseline`."""
    return bool(IDENTIFIER.fullmatch(name)) and name not in RESERVED and name not in (BASELINE, INCREASE)


# Comparisons across int, uint and double exist in the cel-cpp runtime but the checker's standard
# declarations lack them, which would make `log_errors > 0` a type error. The config below replaces
# the declarations of the comparison operators with ones that include the cross-type overloads.
_NUMERIC = (("int", "int64"), ("uint", "uint64"), ("double", "double"))
_ORDERING = (("_<_", "less"), ("_<=_", "less_equals"), ("_>_", "greater"), ("_>=_", "greater_equals"))
_EQUALITY = (("_==_", "equals"), ("_!=_", "not_equals"))


def _overload(overload_id: str, args: tuple[str, ...], *, type_params: bool = False) -> str:
    param = "\n            is_type_param: true" if type_params else ""
    arg_lines = "".join(f'\n          - type_name: "{arg}"{param}' for arg in args)
    return f'      - id: "{overload_id}"\n        args:{arg_lines}\n        return:\n          type_name: "bool"\n'


@functools.cache
def _config_yaml() -> str:
    operators = [op for op, _ in (*_ORDERING, *_EQUALITY)]
    out = ["stdlib:\n  exclude_functions:\n", *(f'    - name: "{op}"\n' for op in operators), "functions:\n"]
    for op, prefix in _ORDERING:
        out.append(f'  - name: "{op}"\n    overloads:\n')
        for left, left_id in _NUMERIC:
            for right, right_id in _NUMERIC:
                suffix = left_id if left == right else f"{left_id}_{right_id}"
                out.append(_overload(f"{prefix}_{suffix}", (left, right)))
        out.append(_overload(f"{prefix}_string", ("string", "string")))
        out.append(_overload(f"{prefix}_bool", ("bool", "bool")))
    for op, prefix in _EQUALITY:
        out.append(f'  - name: "{op}"\n    overloads:\n')
        out.append(_overload(prefix, ("A", "A"), type_params=True))
        for left, left_id in _NUMERIC:
            for right, right_id in _NUMERIC:
                if left != right:
                    out.append(_overload(f"{prefix}_{left_id}_{right_id}", (left, right)))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _environment(signals: frozenset[tuple[str, SignalType]], baselines: frozenset[str],
                 comparisons: frozenset[str]) -> Any:
    variables: dict[str, Any] = {}
    for name, signal_type in signals:
        value_type = cel.Type.DOUBLE if signal_type is SignalType.NUMBER else cel.Type.BOOL
        variables[name] = value_type
        variables[f"{name}.value"] = value_type
        variables[f"{name}.ok"] = cel.Type.BOOL
    for name in baselines:
        variables[f"{BASELINE}.{name}"] = cel.Type.DOUBLE
        variables[f"{INCREASE}.{name}"] = cel.Type.DOUBLE
    for name in comparisons:
        variables.update({f"{name}.{key}": value_type for key, value_type in COMPARISON_FIELDS.items()})
    increase = cel.FunctionDecl(INCREASE, [cel.Overload("increase_double", cel.Type.DOUBLE, [cel.Type.DOUBLE])])
    return cel.NewEnv(config=cel.NewEnvConfigFromYaml(_config_yaml()), variables=variables, functions=[increase])


def _problems(
    raw: str, text: str, signals: Mapping[str, SignalType], baselines: frozenset[str],
    comparisons: frozenset[str] = frozenset(),
) -> tuple[ExpressionProblem, ...]:
    """CEL's error report turned into one problem per error, in an SRE's words where we can."""
    problems = []
    for match in _CEL_ERROR.finditer(raw):
        line, column = int(match.group("line")), int(match.group("column"))
        message = match.group("message").strip().removesuffix("[INVALID_ARGUMENT]").strip()
        dotted = re.fullmatch(r"undeclared reference to '([^']+)'.*", message)
        if dotted and "." in dotted.group(1):
            # CEL points at the last `.` of a dotted name; SREs expect the column where the name starts.
            column -= len(dotted.group(1).rpartition(".")[0])
        undeclared = dotted.group(1).split(".") if dotted else []
        if undeclared and undeclared[0] in comparisons:
            where = f"column {column}" if line == 1 else f"line {line} column {column}"
            known = ", ".join(f"{undeclared[0]}.{key}" for key in COMPARISON_FIELDS)
            what = f'has no field "{".".join(undeclared[1:])}"' if len(undeclared) > 1 else "is not a value"
            problems.append(ExpressionProblem(line, column, f'comparison "{undeclared[0]}" {what} at {where} '
                                                            f"(use {known})"))
            continue
        problems.append(ExpressionProblem(line, column, _explain(message, text, line, column, signals, baselines)))
    if not problems:
        problems.append(ExpressionProblem(1, 1, raw.strip()))
    return tuple(problems)


def _explain(
    message: str, text: str, line: int, column: int, signals: Mapping[str, SignalType], baselines: frozenset[str]
) -> str:
    where = f"column {column}" if line == 1 else f"line {line} column {column}"
    known = ", ".join(sorted(signals)) or "none defined"
    undeclared = re.fullmatch(r"undeclared reference to '([^']+)'.*", message)
    if undeclared:
        name = undeclared.group(1)
        if re.search(rf"(?<![\w.]){re.escape(name)}\s*\(", text):
            return f'unknown function "{name}" at {where}'
        if name == BASELINE:
            return f"{BASELINE} needs a signal name at {where}: write {BASELINE}.<signal>"
        if name.startswith(BASELINE + "."):
            signal = name.split(".")[1]
            if signal in signals and signal not in baselines:
                how = (
                    "add baseline: previous to its prometheus query"
                    if signals[signal] is SignalType.NUMBER
                    else "only prometheus signals have one"
                )
                return f'{name} at {where}: signal "{signal}" has no baseline ({how})'
            name = signal
        name = name.split(".")[0]  # `health.ok` with no signal `health`: the signal is what is unknown
        guess = difflib.get_close_matches(name, list(signals), n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        return f'unknown signal "{name}" at {where} ({hint}known signals: {known})'
    if "cannot be the operand of a select operation" in message:
        chain = chain_at(text, line, column)
        receiver, _, field_name = chain.rpartition(".")
        if receiver in signals:
            return (
                f'signal "{receiver}" has no field "{field_name}" at {where} '
                f"(use {receiver}, {receiver}.ok or {receiver}.value)"
            )
        return f'"{chain}" at {where}: {receiver} has no fields'
    if message.startswith("Syntax error: "):
        return f"syntax error at {where}: {message.removeprefix('Syntax error: ')}"
    overload = re.fullmatch(r"found no matching overload for '_(.+)_' applied to '\((.*)\)'", message)
    if overload:
        operator, operands = overload.groups()
        hint = ""
        if operator in "+-*/%" and "int" in operands and "double" in operands:
            hint = " (CEL arithmetic does not mix int and double: write 2.0, not 2)"
        return f"type error at {where}: operator {operator} cannot be applied to ({operands}){hint}"
    if message.startswith(f"found no matching overload for '{INCREASE}'"):
        return f"type error at {where}: {INCREASE}() takes a number signal with a baseline, such as a prometheus one"
    return f"{message} at {where}"


def _increase_problem(
    text: str, call: Call, signals: Mapping[str, SignalType], baselines: frozenset[str]
) -> ExpressionProblem | None:
    line = text.count("\n", 0, call.start) + 1
    column = call.start - (text.rfind("\n", 0, call.start) + 1) + 1
    where = f"column {column}" if line == 1 else f"line {line} column {column}"
    if call.signal is None or call.signal not in signals:
        return ExpressionProblem(line, column, f"{INCREASE}() takes a signal name at {where}: write "
                                               f"{INCREASE}(<signal>), for example {INCREASE}(p95_latency) > 0.5")
    if call.signal not in baselines:
        return ExpressionProblem(line, column, f'{INCREASE}({call.signal}) at {where}: signal "{call.signal}" has '
                                               "no baseline (add baseline: stable to its prometheus query)")
    return None
