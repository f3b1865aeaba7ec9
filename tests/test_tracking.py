"""The per-Deployment tasks: an analysis that crashes (a bug, not a measurement) is announced and
restarted from its saved state, and after `MAX_RESTARTS` a human is told to take over."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from daemon.clock import FakeClock
from daemon.kube.rollout_state import RolloutId, RolloutPhase
from daemon.kube.state import AnalysisState
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rollout import Rollout
from daemon.rules.expressions import compile_expression
from daemon.rules.model import (
    Action,
    AnalysisTiming,
    PrometheusSignal,
    RollbackPolicy,
    Rule,
    Selector,
    SignalSpec,
    Source,
)
from daemon.tracking import MAX_RESTARTS, TaskRunner, Tracked

SRC = Source("t.yaml", 1)
SIGNALS = {"error_rate": SignalSpec("error_rate", PrometheusSignal('up{a="b"}'), SRC)}
START = 1_700_000_000.0


def rollout() -> Rollout:
    when = compile_expression("error_rate > 0.05", {"error_rate": SIGNALS["error_rate"].type})
    policy = RollbackPolicy("p", Selector(), AnalysisTiming(1, 1, 5), SIGNALS,
                            (Rule("errors", when, Action.ROLLBACK, SRC, 0),), SRC)
    ctx = SignalContext("ns", "web", 2, "abc", "web-abc-", {}, START)
    return Rollout(RolloutId("ns", "web", 2, "abc"), policy, ctx, None, START)


class CrashingMeasurer:
    """Raises (as a bug in rollguard would) the first `crashes` times, then reads a healthy value."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("a bug in rollguard")
        return {"error_rate": Measurement(Phase.OK, 0.01, "ok")}

    async def measure_baselines(self, rollout: Rollout) -> dict[str, Measurement]:
        return {}


class RecordingActions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def analysis_error(self, rollout: Rollout, state: AnalysisState, error: str, *,
                             restarting: bool) -> AnalysisState:
        self.calls.append(("analysis_error", (error, restarting)))
        return state

    async def passed(self, rollout: Rollout, verdict: object, state: AnalysisState) -> AnalysisState:
        self.calls.append(("passed", None))
        return replace(state, phase="passed")

    async def save(self, rollout: Rollout, state: AnalysisState) -> None:
        return None


async def run_until_done(runner: TaskRunner, tracked: Tracked, clock: FakeClock) -> None:
    for _ in range(500):
        if tracked.task is not None and tracked.task.done():
            return
        await clock.advance(0.5)
        await asyncio.sleep(0)
    raise AssertionError("the analysis did not end")


async def test_a_crashed_analysis_is_announced_and_restarted_from_its_state() -> None:
    clock, actions = FakeClock(START), RecordingActions()
    runner = TaskRunner(measurer=CrashingMeasurer(crashes=1), actions=actions, clock=clock, metrics=None)  # type: ignore[arg-type]
    tracked = Tracked(RolloutId("ns", "web", 2, "abc"), RolloutPhase.COMPLETE, state=AnalysisState(revision=2))
    runner.start_analysis(("ns", "web"), tracked, rollout())
    await run_until_done(runner, tracked, clock)
    assert actions.calls == [("analysis_error", ("RuntimeError: a bug in rollguard", True)), ("passed", None)]
    assert tracked.state.phase == "passed"


async def test_an_analysis_that_keeps_crashing_is_left_to_a_human_and_said_so() -> None:
    clock, actions = FakeClock(START), RecordingActions()
    runner = TaskRunner(measurer=CrashingMeasurer(crashes=99), actions=actions, clock=clock, metrics=None)  # type: ignore[arg-type]
    tracked = Tracked(RolloutId("ns", "web", 2, "abc"), RolloutPhase.COMPLETE, state=AnalysisState(revision=2))
    runner.start_analysis(("ns", "web"), tracked, rollout())
    await run_until_done(runner, tracked, clock)
    restarting = [flag for name, (_, flag) in actions.calls if name == "analysis_error"]
    assert restarting == [True] * MAX_RESTARTS + [False], actions.calls
