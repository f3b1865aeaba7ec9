"""The seams of an analysis (`daemon.analysis.Analysis`): what it measures with and what it hands its
verdicts to (Protocols, so tests script one and record the other), and how it shows measurements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from daemon.kube.state import AnalysisState
from daemon.lifecycle import Event
from daemon.measurement import NO_BASELINE, Measurement, Phase
from daemon.rollout import Rollout
from daemon.rules.evaluate import RuleResult, Verdict

MAX_EVIDENCE = 10
"""Measured evidence lines (log lines, failed checks) handed to one alert, at most."""


class Measurer(Protocol):
    """Takes the readings of a rollout's signals (the signal providers behind one seam)."""

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        """One reading of every signal of the policy for the new revision, now."""
        ...

    async def measure_baselines(self, rollout: Rollout) -> dict[str, Measurement]:
        """Readings of the signals with `baseline: previous`, for the previous revision, at rollout start."""
        ...

    async def measure_concurrent(self, rollout: Rollout,
                                 baselines: Mapping[str, Measurement]) -> dict[str, Measurement]:
        """`baselines` with the `baseline: concurrent` ones measured now (called only when a policy has one)."""
        ...


@runtime_checkable
class Wakeable(Protocol):
    """A measurer that can also say when pushed evidence about a rollout arrived (`ProviderMeasurer`)."""

    def wakeup(self, rollout: Rollout) -> asyncio.Event | None:
        """An event set when pushed evidence for `rollout` arrived (held while the analysis runs); None:
        nothing is pushed for it."""
        ...


@runtime_checkable
class Spreading(Protocol):
    """A measurer that spreads the first ticks of simultaneous rollouts over the interval (optional)."""

    def first_tick(self, rollout: Rollout, planned: float) -> float:
        """The first evaluation time (epoch s) for `rollout`, at or after `planned`, within one interval."""
        ...


class Decider(Protocol):
    """Turns verdicts into actions and alerts (`daemon.actions.Actions`)."""

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                       evidence: tuple[str, ...] = ()) -> AnalysisState: ...

    async def review(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *, event: Event,
                     evidence: tuple[str, ...] = ()) -> AnalysisState: ...

    async def notify(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                     evidence: tuple[str, ...] = ()) -> AnalysisState: ...

    async def passed(self, rollout: Rollout, verdict: Verdict | None, state: AnalysisState) -> AnalysisState: ...

    async def save(self, rollout: Rollout, state: AnalysisState) -> None: ...


EvaluationObserver = Callable[[float, Verdict, Mapping[str, Measurement], Mapping[str, Measurement]], None]
"""Called after each evaluation with the tick (epoch seconds), the verdict, the measurements and the baselines."""


def evidence_of(results: tuple[RuleResult, ...], measurements: Mapping[str, Measurement]) -> tuple[str, ...]:
    """What the providers quoted (matching log lines, response bodies) for the signals these rules read."""
    lines: list[str] = []
    for result in results:
        for name in result.values:
            measurement = measurements.get(name)
            if measurement is not None:
                lines.extend(line for line in measurement.evidence if line not in lines)
    return tuple(lines[:MAX_EVIDENCE])


def summarise(measurements: Mapping[str, Measurement]) -> dict[str, Any]:
    return {name: (m.value if m.phase in (Phase.OK, Phase.FAILED) else m.phase.value)
            for name, m in measurements.items()}


def unusable(baseline: Measurement) -> bool:
    """A baseline that could not be measured (worth another try), as opposed to one there is none of."""
    return baseline.phase in (Phase.INCONCLUSIVE, Phase.ERROR) and not baseline.details.get(NO_BASELINE)


def describe_baselines(baselines: Mapping[str, Measurement]) -> dict[str, Any]:
    """The baselines as the analyses API shows them: value, phase, message and revision."""
    return {name: {"value": m.value, "phase": m.phase.value, "message": m.message,
                   "revision": int(m.details["revision"]) if "revision" in m.details else None}
            for name, m in baselines.items()}
