"""Words and numbers shared by the API, `rollguard get`, the live page and the demo.

Rule statuses read `idle`, `pending 12s of 1m`, `fired`, `held: prometheus error` (`held: no data`
when the signal answered with nothing to judge). Times in the API are RFC 3339 in UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.kube.rollout_state import epoch
from daemon.measurement import Measurement, Phase
from daemon.rules.durations import format_duration
from daemon.rules.evaluate import RuleResult, RuleStatus
from daemon.rules.model import Rule, SignalSpec


def rfc3339(epoch: float | None) -> str | None:
    """`epoch` seconds as RFC 3339 in UTC with milliseconds (`2026-12-01T10:00:00.250Z`); None stays None."""
    if epoch is None or not math.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: object) -> float | None:
    """The inverse of `rfc3339`: epoch seconds, or None for anything else."""
    return epoch(text)


def seconds_text(seconds: float) -> str:
    """A duration for people, in whole seconds (`4s`, `1m30s`); never negative."""
    return format_duration(max(0, math.floor(seconds)))


def provider_name(spec: SignalSpec | None) -> str:
    """`prometheus`, `logs`, `http` or `websocket`: the kind of provider behind a signal."""
    if spec is None:
        return "signal"
    name = type(spec.provider).__name__.removesuffix("Signal").lower()
    return {"websocket": "websocket", "logs": "logs", "http": "http"}.get(name, name)


@dataclass(frozen=True)
class RuleShown:
    """One rule's status after an evaluation, as people read it."""

    status: str
    """`idle`, `pending`, `fired` or `held`."""
    text: str
    """`idle`, `pending 12s of 1m`, `fired`, `held: prometheus error`."""
    pending_seconds: float | None
    """How long the condition has been true (None when it is not)."""


def show_rule(rule: Rule, result: RuleResult | None, *, now: float, signals: Mapping[str, SignalSpec],
              measurements: Mapping[str, Measurement]) -> RuleShown:
    """The status of `rule` from its last result (None: not evaluated yet), at `now` (epoch seconds)."""
    if result is None or result.status is RuleStatus.CLEAR:
        return RuleShown("idle", "idle", None)
    if result.status is RuleStatus.MATCHED:
        return RuleShown("fired", "fired", _pending(result, now))
    if result.status is RuleStatus.PENDING:
        pending = _pending(result, now) or 0.0
        return RuleShown("pending", f"pending {seconds_text(pending)} of {format_duration(rule.for_)}", pending)
    errors = sorted(n for n in rule.when.signals if (m := measurements.get(n)) is not None and m.phase is Phase.ERROR)
    why = f"{provider_name(signals.get(errors[0]))} error" if errors else "no data"
    return RuleShown("held", f"held: {why}", _pending(result, now))


def _pending(result: RuleResult, now: float) -> float | None:
    return None if result.pending_since is None else max(0.0, now - result.pending_since)


def rule_timer(pending_seconds: float, for_: float) -> str:
    """The compact timer of a pending rule: `4s/6s`."""
    return f"{seconds_text(pending_seconds)}/{format_duration(for_)}"


_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)"
_SIGNAL = r"([A-Za-z_][A-Za-z0-9_]*)"
_OPS = r"(>=|<=|>|<)"
_PLAIN = re.compile(rf"\b{_SIGNAL}\s*{_OPS}\s*{_NUMBER}(?![\w.])")
_SCALED = re.compile(rf"\b{_SIGNAL}\s*{_OPS}\s*baseline\.{_SIGNAL}(?:\s*\*\s*{_NUMBER})?")


@dataclass(frozen=True)
class Threshold:
    """A line a rule draws on a signal's chart: `error_rate > 0.05`, `p95 > baseline.p95 * 1.5`."""

    rule: str
    op: str
    value: float | None
    """The threshold now (None when it scales a baseline that could not be measured)."""


def thresholds(rules: tuple[Rule, ...], baselines: Mapping[str, float | None]) -> dict[str, list[Threshold]]:
    """The comparisons of each signal with a constant or a scaled baseline, found in the rules' `when`.

    Only these simple shapes are drawn; other conditions (`!health.ok`) have no line."""
    found: dict[str, list[Threshold]] = {}
    for rule in rules:
        text = rule.when.text
        for signal, op, number in _PLAIN.findall(text):
            if signal in rule.when.signals:
                found.setdefault(signal, []).append(Threshold(rule.name, op, float(number)))
        for signal, op, base, factor in _SCALED.findall(text):
            if signal in rule.when.signals:
                baseline = baselines.get(base)
                value = None if baseline is None else baseline * (float(factor) if factor else 1.0)
                found.setdefault(signal, []).append(Threshold(rule.name, op, value))
    return found


def number_text(value: float | bool | None) -> str:
    """A reading for people: `0.12`, `0.238`, `true`, `—` for nothing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == 0 or 0.001 <= abs(value) < 100000:
        return f"{value:.4g}"
    return f"{value:.3g}"
