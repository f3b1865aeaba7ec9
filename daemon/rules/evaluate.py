"""Judge one evaluation tick of a rollout: measurements in, a `Verdict` and the next `EvaluationState` out.

Pure: no I/O, no clock. The caller passes `now` (seconds, any monotonic-enough epoch) and keeps the
returned state, which is JSON-serialisable so it can live in a Deployment annotation and a restarted
daemon resumes its `for:` timers.

Semantics, per rule:

* **Inputs.** The signals and baselines its `when` names. A signal counts as *measured* when its phase
  is OK or FAILED and it has a usable value: a number that is not NaN for Prometheus/logs signals (an
  empty or 0/0 query result is "no data"), a bool for checks (a check without a value counts as
  passed only in phase OK). A baseline counts the same way. Anything else is *unavailable*: phase
  INCONCLUSIVE, PENDING or ERROR, or missing from the mapping (treated as INCONCLUSIVE).
* **Deciding.** Unavailable inputs are left out and the condition is evaluated with CEL's
  error-absorbing `&&`/`||`: when the measured inputs alone decide it (`!health.ok || !ws.ok` with a
  failed health check), the rule is decided; otherwise it is *held* (below).
* **`for`** (Prometheus alert semantics). The first decided-true evaluation starts the pending timer;
  the rule *matches* once `now - pending_since >= for` (at once for `for: 0`); a decided-false
  evaluation resets the timer.
* **Held** (the condition needs an unavailable input). The input's phase picks the rule's policy:
  `onError` if any needed input is ERROR, else `onInconclusive`. A separate timer,
  `unavailable_since`, starts at the first held evaluation and resets at the next decided one.
  - `hold` (default): the pending timer is kept, neither advanced to a match nor reset; once the
    rule has been held for its `for` duration (at once for `for: 0`), it asks for `review`, or for
    `notify` when that is the rule's own, milder action: missing data never asks for more than the
    rule would.
  - `review` / `notify`: that action at once; the pending timer is kept.
  - `ignore`: nothing, however long; the pending timer is kept.
  - `pass`: treated as decided-false: nothing, and the pending timer resets.
  A held rule never yields `rollback` (the loader refuses `rollback` for these choices).
* **Waiting** (every unavailable input is PENDING: its data cannot exist yet, and `now` is before
  `pending_until`, the end of the policy's `pendingGrace`): nothing at all: no action, the held timer
  does not start, the pending timer is kept. Not-yet-measurable is not missing; an SRE paged at every
  deploy because the first evaluation came before the first container started turns rollguard off.
  After `pending_until`, PENDING counts as INCONCLUSIVE and the rule is held as above, its held timer
  starting then.
* **Verdict**: the most severe action of all rules (rollback > review > notify > pass).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from daemon.measurement import NO_BASELINE, Measurement, Phase
from daemon.rules.compared import bind_comparisons
from daemon.rules.durations import format_duration
from daemon.rules.expressions import Activation, EvaluationError, MissingValue, SignalType, SignalValue
from daemon.rules.model import Action, RollbackPolicy, Rule, Unavailable

STATE_VERSION = 1
"""Version of the `EvaluationState.to_dict` format."""


class RuleStatus(StrEnum):
    """Where a rule stands after one evaluation."""

    MATCHED = "matched"
    """The condition held on every evaluation for `for`: the rule's action applies."""
    PENDING = "pending"
    """The condition is true but has not held for `for` yet."""
    CLEAR = "clear"
    """The condition is false."""
    HELD = "held"
    """The condition needs a signal that is inconclusive or in error; `onInconclusive`/`onError` apply."""


@dataclass(frozen=True)
class RuleState:
    """The timers of one rule, in the caller's `now` seconds."""

    pending_since: float | None = None
    """When the condition was first true in the current unbroken run of true evaluations."""
    unavailable_since: float | None = None
    """When the rule was first held in the current unbroken run of held evaluations."""


@dataclass(frozen=True)
class EvaluationState:
    """Per-rule timers of one analysis, carried from one evaluation to the next."""

    rules: Mapping[str, RuleState] = field(default_factory=dict)
    """Timers by rule name; a rule absent here has no timer running."""

    def rule(self, name: str) -> RuleState:
        """The timers of rule `name` (empty when none is running)."""
        return self.rules.get(name, RuleState())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict: `{"version": 1, "rules": {name: {"pendingSince": ..., "unavailableSince": ...}}}`."""
        rules = {
            name: {"pendingSince": state.pending_since, "unavailableSince": state.unavailable_since}
            for name, state in sorted(self.rules.items())
            if state != RuleState()
        }
        return {"version": STATE_VERSION, "rules": rules}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationState:
        """The inverse of `to_dict`. Raises ValueError for anything it did not write."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError(f"evaluation state must be a mapping with version {STATE_VERSION}, got {data!r}")
        rules = data.get("rules")
        if not isinstance(rules, Mapping):
            raise ValueError(f"evaluation state: rules must be a mapping, got {rules!r}")
        parsed: dict[str, RuleState] = {}
        for name, entry in rules.items():
            if not isinstance(name, str) or not isinstance(entry, Mapping):
                raise ValueError(f"evaluation state: bad entry {name!r}: {entry!r}")
            parsed[name] = RuleState(
                _timestamp(entry.get("pendingSince"), name), _timestamp(entry.get("unavailableSince"), name)
            )
        return cls(parsed)


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule in one evaluation, with what it was judged on (for logs and notifications)."""

    rule: str
    """Rule name."""
    action: Action
    """What this rule asks for now: its own action when MATCHED, the held policy's when HELD, else pass."""
    status: RuleStatus
    """Matched, pending, clear or held."""
    when: str
    """The condition as written."""
    message: str
    """One line for humans: the condition, its timing and the values."""
    values: Mapping[str, float | bool | None] = field(default_factory=dict)
    """Value of each signal the condition names; None when unavailable."""
    baselines: Mapping[str, float | None] = field(default_factory=dict)
    """Baseline of each `baseline.x` the condition names; None when unavailable."""
    pending_since: float | None = None
    """Start of the pending timer after this evaluation."""
    unavailable: Phase | None = None
    """INCONCLUSIVE or ERROR when HELD; PENDING while waiting for data that cannot exist yet."""


@dataclass(frozen=True)
class Verdict:
    """The decision of one evaluation: the most severe action any rule asks for."""

    action: Action
    """rollback > review > notify > pass."""
    rules: tuple[RuleResult, ...]
    """Every rule's result, in policy order."""
    reason: str
    """One line: the results that decided the action, or why nothing did."""

    @property
    def deciding(self) -> tuple[RuleResult, ...]:
        """The rule results that asked for `action` (empty for pass)."""
        if self.action is Action.PASS:
            return ()
        return tuple(result for result in self.rules if result.action is self.action)


def evaluate(
    policy: RollbackPolicy,
    measurements: Mapping[str, Measurement],
    baselines: Mapping[str, Measurement],
    state: EvaluationState,
    now: float,
    *,
    pending_until: float | None = None,
) -> tuple[Verdict, EvaluationState]:
    """Judge every rule of `policy` at time `now` (seconds) and return the verdict and the next state.

    `pending_until` (same clock as `now`): until then, a rule held only by PENDING inputs waits
    quietly; None means no grace (PENDING counts as INCONCLUSIVE at once)."""
    results: list[RuleResult] = []
    next_rules: dict[str, RuleState] = {}
    for rule in policy.rules:
        signal_types = {name: policy.signals[name].type for name in rule.when.signals}
        result, rule_state = _evaluate_rule(rule, signal_types, measurements, baselines, state.rule(rule.name), now,
                                            pending_until)
        results.append(result)
        if rule_state != RuleState():
            next_rules[rule.name] = rule_state
    action = max((result.action for result in results), key=lambda a: a.severity, default=Action.PASS)
    if action is Action.PASS:
        pending = [r.rule for r in results if r.status in (RuleStatus.PENDING, RuleStatus.HELD)]
        reason = "no rule matched" + (f" (pending or held: {', '.join(pending)})" if pending else "")
    else:
        reason = "; ".join(result.message for result in results if result.action is action)
    return Verdict(action, tuple(results), reason), EvaluationState(next_rules)


@dataclass
class _Inputs:
    activation: Activation
    values: dict[str, float | bool | None]
    baselines: dict[str, float | None]
    unavailable: dict[str, tuple[Phase, str]]
    """Input name (`x` or `baseline.x`) → its phase and why it is unusable."""
    baseline_revisions: dict[str, int] = field(default_factory=dict)
    """Baseline name → the revision it was measured on (`details["revision"]`), shown in messages."""
    increases: dict[str, float | None] = field(default_factory=dict)
    """Signal name → `increase(name)`, None when undefined; shown in messages."""
    absent: dict[str, str] = field(default_factory=dict)
    """`baseline.x` inputs that cannot exist (`NO_BASELINE`) → why."""


def _evaluate_rule(
    rule: Rule,
    signal_types: Mapping[str, SignalType],
    measurements: Mapping[str, Measurement],
    baselines: Mapping[str, Measurement],
    previous: RuleState,
    now: float,
    pending_until: float | None,
) -> tuple[RuleResult, RuleState]:
    inputs = _inputs(rule, signal_types, measurements, baselines)
    try:
        decided = rule.when.evaluate(inputs.activation)
    except MissingValue:
        compared = {name.removeprefix("baseline.") for name in inputs.absent}
        if inputs.absent and not {name for name in inputs.unavailable
                                   if name not in inputs.absent and name not in compared}:
            # Nothing to compare with (a first revision) is not missing data: the rule does not apply.
            why = "; ".join(f"{name}, and there is none: {reason}" for name, reason in sorted(inputs.absent.items()))
            return _result(rule, Action.PASS, RuleStatus.CLEAR, f"{rule.name}: not applied: {rule.when.text} "
                                                                f"needs {why}", inputs), RuleState()
        return _held(rule, inputs, previous, now, pending_until)
    except EvaluationError as exc:
        inputs.unavailable["when"] = (Phase.ERROR, str(exc))
        return _held(rule, inputs, previous, now, pending_until)
    shown = _show_values(inputs)
    if not decided:
        message = f"{rule.name}: {rule.when.text} is false{shown}"
        return _result(rule, Action.PASS, RuleStatus.CLEAR, message, inputs), RuleState()
    pending_since = previous.pending_since if previous.pending_since is not None else now
    held_for = now - pending_since
    if held_for >= rule.for_:
        timing = f" for {format_duration(held_for)}" if rule.for_ > 0 else ""
        message = f"{rule.name}: {rule.when.text} held{timing}{shown}"
        status, action = RuleStatus.MATCHED, rule.action
    else:
        message = (
            f"{rule.name}: {rule.when.text} true for {format_duration(held_for)} of {format_duration(rule.for_)}{shown}"
        )
        status, action = RuleStatus.PENDING, Action.PASS
    result = _result(rule, action, status, message, inputs, pending_since=pending_since)
    return result, RuleState(pending_since=pending_since)


def _held(rule: Rule, inputs: _Inputs, previous: RuleState, now: float,
          pending_until: float | None) -> tuple[RuleResult, RuleState]:
    phases = {p for p, _ in inputs.unavailable.values()}
    why = "; ".join(f"{name} is {p.value}: {reason}" for name, (p, reason) in sorted(inputs.unavailable.items()))
    base = f"{rule.name}: cannot evaluate {rule.when.text} ({why})"
    if phases == {Phase.PENDING} and pending_until is not None and now < pending_until:
        message = (f"{rule.name}: waiting for data ({why}); onInconclusive applies if still pending in "
                   f"{format_duration(pending_until - now)}")
        result = _result(rule, Action.PASS, RuleStatus.HELD, message, inputs,
                         pending_since=previous.pending_since, unavailable=Phase.PENDING)
        return result, RuleState(pending_since=previous.pending_since)
    phase = Phase.ERROR if Phase.ERROR in phases else Phase.INCONCLUSIVE
    choice, option = (rule.on_error, "onError") if phase is Phase.ERROR else (rule.on_inconclusive, "onInconclusive")
    since = previous.unavailable_since if previous.unavailable_since is not None else now
    pending_since = None if choice is Unavailable.PASS else previous.pending_since
    waited = format_duration(now - since)
    if choice is Unavailable.HOLD:
        escalation = Action.REVIEW if rule.action.severity >= Action.REVIEW.severity else rule.action
        if now - since >= rule.for_:
            action, message = escalation, f"{base} for {waited}: {escalation.value} ({option}: hold)"
        else:
            action = Action.PASS
            message = f"{base} for {waited}: holding, {escalation.value} after {format_duration(rule.for_)}"
    elif choice in (Unavailable.REVIEW, Unavailable.NOTIFY):
        action, message = Action(choice.value), f"{base}: {choice.value} ({option}: {choice.value})"
    elif choice is Unavailable.IGNORE:
        action, message = Action.PASS, f"{base}: ignored ({option}: ignore)"
    else:
        action, message = Action.PASS, f"{base}: treated as false ({option}: pass)"
    result = _result(rule, action, RuleStatus.HELD, message, inputs, pending_since=pending_since, unavailable=phase)
    return result, RuleState(pending_since=pending_since, unavailable_since=since)


def _inputs(
    rule: Rule,
    signal_types: Mapping[str, SignalType],
    measurements: Mapping[str, Measurement],
    baselines: Mapping[str, Measurement],
) -> _Inputs:
    signals: dict[str, SignalValue] = {}
    values: dict[str, float | bool | None] = {}
    baseline_values: dict[str, float] = {}
    shown_baselines: dict[str, float | None] = {}
    unavailable: dict[str, tuple[Phase, str]] = {}
    absent: dict[str, str] = {}
    revisions: dict[str, int] = {}
    for name in sorted(rule.when.signals):
        measurement = measurements.get(name)
        bound = None
        if measurement is None:
            unavailable[name] = (Phase.INCONCLUSIVE, "not measured")
        elif measurement.phase in (Phase.INCONCLUSIVE, Phase.ERROR, Phase.PENDING):
            unavailable[name] = (measurement.phase, measurement.message)
        elif signal_types[name] is SignalType.BOOL:
            checked = measurement.value if isinstance(measurement.value, bool) else measurement.phase is Phase.OK
            bound = SignalValue(checked, measurement.phase is Phase.OK and checked)
        else:
            number = _number(measurement.value)
            if number is None:
                unavailable[name] = (Phase.INCONCLUSIVE, f"no value ({measurement.message})")
            else:
                bound = SignalValue(number, measurement.phase is Phase.OK)
        if bound is not None:
            signals[name] = bound
        values[name] = bound.value if bound is not None else None
    for name in sorted(rule.when.baselines | rule.when.increases):
        measurement = baselines.get(name)
        number = None
        if measurement is None:
            unavailable[f"baseline.{name}"] = (Phase.INCONCLUSIVE, "no baseline measured")
        elif measurement.phase in (Phase.INCONCLUSIVE, Phase.ERROR, Phase.PENDING):
            unavailable[f"baseline.{name}"] = (measurement.phase, measurement.message)
            if measurement.details.get(NO_BASELINE):
                absent[f"baseline.{name}"] = measurement.message
        else:
            number = _number(measurement.value)
            if number is None:
                unavailable[f"baseline.{name}"] = (Phase.INCONCLUSIVE, f"no value ({measurement.message})")
            else:
                baseline_values[name] = number
        shown_baselines[name] = number
        if measurement is not None and "revision" in measurement.details:
            revisions[name] = int(measurement.details["revision"])
    increases: dict[str, float] = {}
    shown_increases: dict[str, float | None] = {}
    for name in sorted(rule.when.increases):
        change = _increase(signals.get(name), baseline_values.get(name))
        if change is not None:
            increases[name] = change
        elif name in signals and name in baseline_values:
            unavailable[f"increase({name})"] = (Phase.INCONCLUSIVE, "the baseline is 0: a change relative to "
                                                                    "nothing is undefined")
        shown_increases[name] = change
    compared, shown_compared, unusable = bind_comparisons(rule.when.comparisons, measurements)
    values.update(shown_compared)
    unavailable.update(unusable)
    return _Inputs(Activation(signals, baseline_values, increases, compared), values, shown_baselines, unavailable,
                   revisions, shown_increases, absent)


def _increase(signal: SignalValue | None, baseline: float | None) -> float | None:
    """`(value - baseline) / |baseline|`, or None when either is missing or the baseline is 0."""
    if signal is None or baseline is None or baseline == 0 or isinstance(signal.value, bool):
        return None
    return (signal.value - baseline) / abs(baseline)


def _number(value: float | bool | None) -> float | None:
    """A usable number, or None: missing, a bool where a number belongs, or NaN (Prometheus's 0/0)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _result(
    rule: Rule,
    action: Action,
    status: RuleStatus,
    message: str,
    inputs: _Inputs,
    *,
    pending_since: float | None = None,
    unavailable: Phase | None = None,
) -> RuleResult:
    return RuleResult(
        rule=rule.name,
        action=action,
        status=status,
        when=rule.when.text,
        message=message,
        values=dict(inputs.values),
        baselines=dict(inputs.baselines),
        pending_since=pending_since,
        unavailable=unavailable,
    )


def _show_values(inputs: _Inputs) -> str:
    parts = [f"{name}={_fmt(value)}" for name, value in inputs.values.items()]
    parts += [f"baseline.{name}={_fmt(value)}"
              + (f" of revision {inputs.baseline_revisions[name]}" if name in inputs.baseline_revisions else "")
              for name, value in inputs.baselines.items()]
    parts += [f"increase({name})=" + ("n/a" if value is None else f"{value:+.0%}")
              for name, value in inputs.increases.items()]
    return f" ({', '.join(parts)})" if parts else ""


def _fmt(value: float | bool | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.4g}"


def _timestamp(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"evaluation state: rule {name!r} has a bad timestamp {value!r}")
    return float(value)
