"""The bounded memory an analysis keeps of itself, for the API, `rollguard get` and the live page.

Per signal: the last `MAX_POINTS` readings (time, value, phase). Per rule: the moments it started
pending, fired, was held or cleared (the last `MAX_MARKS`). Times are the analysis clock's epoch
seconds (the scheduled evaluation times). Pure: the analysis hands it each evaluation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from daemon.measurement import Measurement, Phase
from daemon.rules.evaluate import RuleResult, RuleStatus, Verdict

MAX_POINTS = 240
"""Readings kept per signal (at an interval of 15 s: the last hour)."""
MAX_MARKS = 50
"""Rule moments (pending, fired, held, cleared) kept per analysis."""


@dataclass(frozen=True)
class Point:
    """One reading of one signal."""

    at: float
    """Epoch seconds of the evaluation."""
    value: float | bool | None
    """The measured value; None when there was nothing to read (inconclusive, error)."""
    phase: Phase


@dataclass(frozen=True)
class Mark:
    """A moment a rule changed status."""

    at: float
    """Epoch seconds of the evaluation that saw the change."""
    rule: str
    event: str
    """`pending`, `fired`, `held` or `cleared`."""


_EVENT = {RuleStatus.PENDING: "pending", RuleStatus.MATCHED: "fired", RuleStatus.HELD: "held",
          RuleStatus.CLEAR: "cleared"}


@dataclass
class AnalysisHistory:
    """Readings and rule moments of one analysis, bounded (see the module docstring)."""

    signals: dict[str, deque[Point]] = field(default_factory=dict)
    marks: deque[Mark] = field(default_factory=lambda: deque(maxlen=MAX_MARKS))
    measurements: Mapping[str, Measurement] = field(default_factory=dict)
    """The last evaluation's readings."""
    baselines: Mapping[str, Measurement] = field(default_factory=dict)
    """The baselines measured at rollout start."""
    last_at: float | None = None
    """Epoch seconds of the last evaluation."""
    next_at: float | None = None
    """Epoch seconds of the next scheduled evaluation (None once the analysis ended)."""
    _statuses: dict[str, RuleStatus] = field(default_factory=dict)

    def record(self, at: float, measurements: Mapping[str, Measurement], verdict: Verdict) -> None:
        """Keep one evaluation: every reading, and each rule whose status changed."""
        self.last_at = at
        self.measurements = dict(measurements)
        for name, m in measurements.items():
            value = m.value if m.phase in (Phase.OK, Phase.FAILED) else None
            self.signals.setdefault(name, deque(maxlen=MAX_POINTS)).append(Point(at, value, m.phase))
        for result in verdict.rules:
            self._note(at, result)

    def _note(self, at: float, result: RuleResult) -> None:
        before = self._statuses.get(result.rule, RuleStatus.CLEAR)
        self._statuses[result.rule] = result.status
        if result.status is before:
            return
        # A rule that fires at once (`for: 0`) was never seen pending: its pending moment is its firing.
        since = result.pending_since if result.pending_since is not None else at
        if result.status is RuleStatus.MATCHED and before is not RuleStatus.PENDING:
            self.marks.append(Mark(since, result.rule, "pending"))
        elif result.status is RuleStatus.PENDING:
            self.marks.append(Mark(since, result.rule, "pending"))
            return
        self.marks.append(Mark(at, result.rule, _EVENT[result.status]))
