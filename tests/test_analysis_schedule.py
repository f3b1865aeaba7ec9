"""The analysis schedule with a controllable clock: initial delay, interval, bake time, and the rule
that a rollout is never passed while a rule's condition is true and its `for` is still running.

The measurer and decider here are the two seams of `Analysis` (Protocols): scripted readings in,
recorded decisions out. The providers and actions behind them are tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from daemon.analysis import Analysis
from daemon.clock import FakeClock
from daemon.kube.rollout_state import RolloutId
from daemon.kube.state import AnalysisState
from daemon.rollout import Rollout
from daemon.rules.evaluate import Verdict
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
from daemon.signals.base import Measurement, Phase, SignalContext

SRC = Source("t.yaml", 1)
SIGNALS = {"error_rate": SignalSpec("error_rate", PrometheusSignal('up{a="b"}'), SRC)}
START = 1_700_000_000.0


def make_rollout(*, for_: float, initial_delay: float = 30, interval: float = 10, bake: float = 60) -> Rollout:
    when = compile_expression("error_rate > 0.05", {"error_rate": SIGNALS["error_rate"].type})
    policy = RollbackPolicy("p", Selector(), AnalysisTiming(initial_delay, interval, bake), SIGNALS,
                            (Rule("errors", when, Action.ROLLBACK, SRC, for_),), SRC)
    ctx = SignalContext("ns", "web", 2, "abc", "web-abc-", {}, START)
    return Rollout(RolloutId("ns", "web", 2, "abc"), policy, ctx, None, START)


class ScriptedMeasurer:
    """Error ratio as a function of time since the rollout started; records when it was asked."""

    def __init__(self, clock: FakeClock, ratio: Callable[[float], float]) -> None:
        self.clock = clock
        self.ratio = ratio
        self.asked_at: list[float] = []

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        elapsed = self.clock.now() - START
        self.asked_at.append(elapsed)
        return {"error_rate": Measurement(Phase.OK, self.ratio(elapsed), "scripted")}

    async def measure_baselines(self, rollout: Rollout) -> dict[str, Measurement]:
        return {}


class RecordingDecider:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.decisions: list[tuple[str, float]] = []

    def _record(self, what: str, state: AnalysisState) -> AnalysisState:
        self.decisions.append((what, self.clock.now() - START))
        return state

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, **_: object) -> AnalysisState:
        return replace(self._record("rollback", state), phase="rolling-back")

    async def review(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, **_: object) -> AnalysisState:
        return replace(self._record("review", state), phase="review")

    async def notify(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, **_: object) -> AnalysisState:
        return self._record("notify", state)

    async def passed(self, rollout: Rollout, verdict: Verdict | None, state: AnalysisState) -> AnalysisState:
        return replace(self._record("passed", state), phase="passed")

    async def save(self, rollout: Rollout, state: AnalysisState) -> None:
        return None


async def drive(analysis: Analysis, clock: FakeClock, *, complete_at: float, until: float) -> None:
    """Run the analysis on the fake clock, completing the rollout at `complete_at` seconds."""
    task = asyncio.create_task(analysis.run())
    completed = False
    while clock.now() - START < until and not task.done():
        if not completed and clock.now() - START >= complete_at:
            analysis.rollout_completed(clock.now())
            completed = True
        await clock.advance(1)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_ticks_follow_initial_delay_and_interval_and_pass_after_bake() -> None:
    clock = FakeClock(START)
    measurer, decider = ScriptedMeasurer(clock, lambda _t: 0.01), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=60), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    assert measurer.asked_at[:4] == [30, 40, 50, 60]
    # Complete at 20 s, bake 60 s: passes at the first tick at or after 80 s.
    assert decider.decisions == [("passed", 80)]


async def test_for_ten_minutes_fires_after_ten_minutes_of_bad_readings_in_simulated_time() -> None:
    clock = FakeClock(START)
    measurer, decider = ScriptedMeasurer(clock, lambda t: 0.12 if t >= 100 else 0.01), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=600, bake=3600), AnalysisState(), measurer=measurer, decider=decider,
                        clock=clock)
    await drive(analysis, clock, complete_at=20, until=2000)
    assert decider.decisions == [("rollback", 700)]


async def test_bake_time_is_extended_while_a_rule_is_pending_and_it_still_fires() -> None:
    clock = FakeClock(START)
    # Bad from 70 s on; the bake time would end at 80 s, the rule needs 30 s of bad readings.
    measurer, decider = ScriptedMeasurer(clock, lambda t: 0.12 if t >= 70 else 0.01), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=30), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    assert decider.decisions == [("rollback", 100)]


async def test_a_rule_that_clears_during_the_extension_lets_the_rollout_pass() -> None:
    clock = FakeClock(START)
    measurer, decider = ScriptedMeasurer(clock, lambda t: 0.12 if 70 <= t < 90 else 0.01), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=30), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    # It cleared at the 90 s reading; the pass is decided at the next tick.
    assert decider.decisions == [("passed", 100)]


async def test_resumed_state_keeps_the_for_timer() -> None:
    clock = FakeClock(START)
    measurer, decider = ScriptedMeasurer(clock, lambda _t: 0.12), RecordingDecider(clock)
    # A previous daemon saw the condition true since 30 s after the start; restarted at 0 s of its own,
    # the rule must fire 60 s after the original pending start, not 60 s after the restart.
    state = AnalysisState(revision=2, pod_template_hash="abc", started_at=START,
                          rules={"version": 1, "rules": {"errors": {"pendingSince": START - 30}}})
    analysis = Analysis(make_rollout(for_=60), state, measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=0, until=600)
    assert decider.decisions == [("rollback", 30)]


class OutageMeasurer(ScriptedMeasurer):
    """Prometheus unreachable between `down` and `up` seconds after the start."""

    def __init__(self, clock: FakeClock, down: float, up: float) -> None:
        super().__init__(clock, lambda _t: 0.01)
        self.down, self.up = down, up

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        elapsed = self.clock.now() - START
        if self.down <= elapsed < self.up:
            self.asked_at.append(elapsed)
            return {"error_rate": Measurement(Phase.ERROR, None, "connection refused")}
        return await super().measure(rollout)


async def test_a_provider_outage_at_the_end_of_the_bake_time_does_not_pass_the_rollout() -> None:
    clock = FakeClock(START)
    measurer, decider = OutageMeasurer(clock, down=70, up=90), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=30), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    # The bake time ends at 80 s, in the middle of the outage: the pass waits for a real reading (90 s)
    # and is decided at the next tick. The outage was shorter than the rule's `for`, so nobody was paged.
    assert decider.decisions == [("passed", 100)]


class SlowQueryMeasurer(ScriptedMeasurer):
    """Queries take time: 50 ms for the first bad reading, 10 ms for the others (the clock moves on)."""

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        result = await super().measure(rollout)
        value = result["error_rate"].value
        bad_before = sum(1 for t in self.asked_at[:-1] if self.ratio(t) > 0.05)
        await self.clock.advance(0.05 if isinstance(value, float) and value > 0.05 and not bad_before else 0.01)
        return result


async def test_for_counts_from_the_scheduled_evaluations_not_from_when_the_answers_came() -> None:
    """`for: 20s` at a 10 s interval fires on the third bad evaluation, as Prometheus' `for:` does,
    however long each query took (it used to wait one more interval when the first query was slower)."""
    clock = FakeClock(START)
    measurer = SlowQueryMeasurer(clock, lambda t: 0.12 if t >= 100 else 0.01)
    decider = RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=20, bake=3600), AnalysisState(), measurer=measurer, decider=decider,
                        clock=clock)
    await drive(analysis, clock, complete_at=20, until=400)
    assert [(what, round(at)) for what, at in decider.decisions] == [("rollback", 120)], decider.decisions


class LateDataMeasurer(ScriptedMeasurer):
    """No sample of the new pods before `first` seconds after the start (PENDING), healthy after."""

    def __init__(self, clock: FakeClock, first: float) -> None:
        super().__init__(clock, lambda _t: 0.01)
        self.first = first

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        elapsed = self.clock.now() - START
        if elapsed < self.first:
            self.asked_at.append(elapsed)
            return {"error_rate": Measurement(Phase.PENDING, None, "no sample of the new pods yet")}
        return await super().measure(rollout)


async def test_a_rollout_is_not_passed_before_its_signals_could_be_measured() -> None:
    clock = FakeClock(START)
    measurer, decider = LateDataMeasurer(clock, first=120), RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=30), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    # The bake time ends at 80 s, but until 120 s nothing was measured: the pass waits for the first
    # real reading (120 s) and is decided at the next tick; nobody was paged for the wait.
    assert decider.decisions == [("passed", 130)]


async def test_data_that_never_comes_is_judged_by_on_inconclusive_after_the_grace() -> None:
    clock = FakeClock(START)
    measurer, decider = LateDataMeasurer(clock, first=10_000), RecordingDecider(clock)
    rollout = make_rollout(for_=30)
    timing = replace(rollout.policy.analysis, pending_grace=200.0)
    rollout = replace(rollout, policy=replace(rollout.policy, analysis=timing))
    analysis = Analysis(rollout, AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    # Pending until the grace (200 s), then inconclusive, held (onInconclusive: hold) for the rule's
    # `for` (30 s): a human is asked to review; the analysis never passed an unmeasured rollout.
    assert decider.decisions == [("review", 230)]


async def test_a_rule_that_turns_true_after_a_long_outage_still_gets_its_full_for() -> None:
    # Fault schedule seed 6: Prometheus was down from the first tick until past the bake time's
    # extension limit (complete 20 s + bake 60 s + 2 × for = 140 s); its first reading after the outage
    # was bad, so the rule started pending — and the rollout was passed at the next tick, bad as it was.
    clock = FakeClock(START)
    measurer = OutageMeasurer(clock, down=30, up=150)
    measurer.ratio = lambda _t: 0.12
    decider = RecordingDecider(clock)
    analysis = Analysis(make_rollout(for_=30), AnalysisState(), measurer=measurer, decider=decider, clock=clock)
    await drive(analysis, clock, complete_at=20, until=600)
    # Held by the outage (paged for review after its `for`), then pending from 150 s: it fires at 180 s.
    assert decider.decisions == [("review", 60), ("rollback", 180)]
