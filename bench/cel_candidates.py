"""Measure the CEL libraries rollguard could use for rule `when` expressions; print the figures as JSON.

Run: `.venv/bin/python bench/cel_candidates.py [--evaluations 10000]`. Each candidate is imported
lazily and guarded: one that is not installed or crashes is recorded as such, not fatal. The
candidates not chosen are not project dependencies; install them by hand to measure them. Nothing in
`daemon/` or `tests/` imports this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

EXPRESSION = "error_rate > 0.05 && !health.ok || p95_latency > baseline.p95_latency * 1.5"
ERROR_CASES = {
    "syntax_error": "error_rate >> 0.05",
    "unknown_identifier": "error_rat > 0.05",
    "type_error": 'error_rate > "x"',
}
FLAT_VALUES: dict[str, Any] = {
    "error_rate": 0.02,
    "health.ok": True,
    "p95_latency": 0.31,
    "baseline.p95_latency": 0.2,
}
NESTED_VALUES: dict[str, Any] = {
    "error_rate": 0.02,
    "health": {"ok": True},
    "p95_latency": 0.31,
    "baseline": {"p95_latency": 0.2},
}
EXPECTED = True  # 0.31 > 0.2 * 1.5


class Candidate:
    """One library behind three callables: compile, evaluate a compiled program, and describe an error."""

    def __init__(self, name: str, package: str) -> None:
        self.name = name
        self.package = package

    def compile(self, text: str) -> Any:
        raise NotImplementedError

    def evaluate(self, program: Any) -> Any:
        raise NotImplementedError

    def static_types(self) -> bool:
        """True when compile() rejects type errors and unknown names before any evaluation."""
        raise NotImplementedError


class CelExprPython(Candidate):
    """Google's cel-cpp through `cel_expr_python`: declared variable types, checked at compile time."""

    def __init__(self) -> None:
        super().__init__("cel-expr-python", "cel-expr-python")
        from cel_expr_python import cel

        variables = {
            "error_rate": cel.Type.DOUBLE,
            "health.ok": cel.Type.BOOL,
            "p95_latency": cel.Type.DOUBLE,
            "baseline.p95_latency": cel.Type.DOUBLE,
        }
        self._env = cel.NewEnv(variables=variables)

    def compile(self, text: str) -> Any:
        return self._env.compile(text)

    def evaluate(self, program: Any) -> Any:
        return program.eval(data=FLAT_VALUES).value()

    def static_types(self) -> bool:
        return True


class CommonExpressionLanguage(Candidate):
    """The Rust `cel` crate through `common-expression-language` (module `cel`): dynamically typed."""

    def __init__(self) -> None:
        super().__init__("common-expression-language", "common-expression-language")
        import cel

        self._cel = cel

    def compile(self, text: str) -> Any:
        return self._cel.compile(text)

    def evaluate(self, program: Any) -> Any:
        return program.execute(NESTED_VALUES)

    def static_types(self) -> bool:
        return False


class CelPython(Candidate):
    """cloud-custodian's pure-Python `celpy`: annotations are accepted but only enforced while evaluating."""

    def __init__(self) -> None:
        super().__init__("cel-python", "cel-python")
        import celpy
        from celpy import celtypes

        annotations = {
            "error_rate": celtypes.DoubleType,
            "health.ok": celtypes.BoolType,
            "p95_latency": celtypes.DoubleType,
            "baseline.p95_latency": celtypes.DoubleType,
        }
        self._env = celpy.Environment(annotations=annotations)
        self._values = {
            "error_rate": celtypes.DoubleType(FLAT_VALUES["error_rate"]),
            "health.ok": celtypes.BoolType(FLAT_VALUES["health.ok"]),
            "p95_latency": celtypes.DoubleType(FLAT_VALUES["p95_latency"]),
            "baseline.p95_latency": celtypes.DoubleType(FLAT_VALUES["baseline.p95_latency"]),
        }

    def compile(self, text: str) -> Any:
        return self._env.program(self._env.compile(text))

    def evaluate(self, program: Any) -> Any:
        return program.evaluate(self._values)

    def static_types(self) -> bool:
        return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _error_message(candidate: Candidate, text: str) -> dict[str, str]:
    """What the library says about a bad expression, and whether it said so at compile or at evaluation time."""
    try:
        program = candidate.compile(text)
    except Exception as exc:  # the message is the measurement
        return {"stage": "compile", "message": _describe(exc)}
    try:
        result = candidate.evaluate(program)
    except Exception as exc:
        return {"stage": "evaluate", "message": _describe(exc)}
    return {"stage": "accepted", "message": f"no error; evaluated to {result!r}"}


def _time_per_call(fn: Callable[[], object], count: int) -> float:
    """Mean microseconds per call over `count` calls."""
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def measure(factory: Callable[[], Candidate], package: str, evaluations: int) -> dict[str, Any]:
    """All figures of one candidate; an import failure or crash becomes a recorded error."""
    try:
        candidate = factory()
    except Exception as exc:
        return {"package": package, "available": False, "error": _describe(exc)}
    try:
        from importlib.metadata import version

        program = candidate.compile(EXPRESSION)
        result = candidate.evaluate(program)
        if bool(result) is not EXPECTED:
            return {"package": package, "available": True, "error": f"wrong result {result!r}"}
        compile_us = _time_per_call(lambda: candidate.compile(EXPRESSION), max(evaluations // 50, 20))
        candidate.evaluate(program)  # warm up
        evaluate_us = _time_per_call(lambda: candidate.evaluate(program), evaluations)
        return {
            "package": package,
            "version": version(package),
            "available": True,
            "compile_us": round(compile_us, 1),
            "evaluate_us": round(evaluate_us, 2),
            "evaluations": evaluations,
            "static_type_check": candidate.static_types(),
            "errors": {case: _error_message(candidate, text) for case, text in ERROR_CASES.items()},
        }
    except Exception:
        return {"package": package, "available": True, "error": traceback.format_exc(limit=3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--evaluations", type=int, default=10_000, help="evaluations timed per candidate")
    args = parser.parse_args(argv)
    factories: list[tuple[Callable[[], Candidate], str]] = [
        (CelExprPython, "cel-expr-python"),
        (CommonExpressionLanguage, "common-expression-language"),
        (CelPython, "cel-python"),
    ]
    report = {
        "expression": EXPRESSION,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "candidates": {package: measure(factory, package, args.evaluations) for factory, package in factories},
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
