"""How far behind schedule rollguard judges, on `/metrics`: the lag from each planned tick to its verdict
(`rollguard_evaluation_lag_seconds`) and the ticks skipped because the one before ran late
(`rollguard_ticks_skipped_total`). On the fake clock, with a measurement that takes 25 s once."""

from __future__ import annotations

from prometheus_client import generate_latest

from daemon.analysis import Analysis
from daemon.clock import FakeClock
from daemon.kube.state import AnalysisState
from daemon.metrics import Metrics
from daemon.rollout import Rollout
from daemon.signals.base import Measurement
from tests.test_analysis_schedule import START, RecordingDecider, ScriptedMeasurer, drive, make_rollout


class SlowOnce(ScriptedMeasurer):
    """The tick planned at 40 s takes 25 s to measure (a Prometheus answering slowly, a loaded loop)."""

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        readings = await super().measure(rollout)
        if self.asked_at[-1] == 40:
            await self.clock.sleep(25)
        return readings


def samples(metrics: Metrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("rollguard_evaluation_lag_seconds_", "rollguard_ticks_skipped_total"))}


async def test_a_late_tick_is_measured_and_the_ticks_it_covered_are_counted() -> None:
    clock = FakeClock(START)
    metrics = Metrics()
    measurer = SlowOnce(clock, lambda _t: 0.01)
    analysis = Analysis(make_rollout(for_=60, bake=3600), AnalysisState(), measurer=measurer,
                        decider=RecordingDecider(clock), clock=clock, metrics=metrics)
    await drive(analysis, clock, complete_at=20, until=100)

    # Planned 30, 40, 50, 60, ...: the tick of 40 s ends at 65 s, after the ticks of 50 s and 60 s. The
    # next evaluation is made at once and stands for the latest (60 s, 5 s late); 50 s is skipped. The
    # schedule then goes on from 60 s, not from 65 s: 70, 80, 90, 100 (a late tick must not move the
    # analysis off the second its phase chose, where its queries are batched with other rollouts').
    assert measurer.asked_at == [30, 40, 65, 70, 80, 90, 100]
    figures = samples(metrics)
    assert figures["rollguard_ticks_skipped_total"] == 1
    assert figures["rollguard_evaluation_lag_seconds_count"] == 7
    assert figures["rollguard_evaluation_lag_seconds_sum"] == 25 + 5
    assert figures['rollguard_evaluation_lag_seconds_bucket{le="0.05"}'] == 5
    assert figures['rollguard_evaluation_lag_seconds_bucket{le="5.0"}'] == 6
    assert figures['rollguard_evaluation_lag_seconds_bucket{le="30.0"}'] == 7


async def test_a_late_first_tick_keeps_the_analysis_on_its_schedule() -> None:
    """An analysis that gets to its first tick late (a busy start at thousands of rollouts, a resumed
    analysis) evaluates at once, then goes on at the times its schedule planned — the whole seconds its
    phase chose, which batching shares with other rollouts — instead of from when it happened to start."""
    clock = FakeClock(START + 53)  # first tick planned at 30 s (initial delay), interval 10 s
    metrics = Metrics()
    measurer = ScriptedMeasurer(clock, lambda _t: 0.01)
    analysis = Analysis(make_rollout(for_=60, bake=3600), AnalysisState(), measurer=measurer,
                        decider=RecordingDecider(clock), clock=clock, metrics=metrics)
    await drive(analysis, clock, complete_at=0, until=95)
    assert measurer.asked_at == [54, 60, 70, 80, 90]  # 54: the fake clock moves in steps of 1 s
    figures = samples(metrics)
    assert figures["rollguard_evaluation_lag_seconds_sum"] == 4, "the first stands for the tick of 50 s"
    assert figures["rollguard_ticks_skipped_total"] == 0, "ticks before the analysis ran are not skipped ticks"
