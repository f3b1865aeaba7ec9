"""Spread ticks: simultaneous rollouts get deterministic first-tick phases over the interval, in whole seconds.

A cluster-wide image bump starts thousands of analyses in the same second; without a phase they all
tick in that second, every interval (a burst of queries, then nothing). With `spread_first_tick` the
measurer moves each first tick to the next whole second plus `tick_phase` (a hash of
namespace/name/revision below the interval), and the later ticks keep that phase.
"""

from __future__ import annotations

import math
from collections import Counter

import aiohttp

from daemon.analysis import Analysis
from daemon.clock import FakeClock
from daemon.kube.rollout_state import RolloutId
from daemon.kube.state import AnalysisState
from daemon.measure import ProviderMeasurer, tick_phase
from daemon.rollout import Rollout
from daemon.signals.base import SignalContext
from tests.test_analysis_schedule import START, RecordingDecider, ScriptedMeasurer, drive, make_rollout


def rollout_of(namespace: str, name: str, revision: int = 2) -> Rollout:
    base = make_rollout(for_=60)
    ctx = SignalContext(namespace, name, revision, "abc", f"{name}-abc-", {}, START)
    return Rollout(RolloutId(namespace, name, revision, "abc"), base.policy, ctx, None, START)


def test_a_thousand_simultaneous_rollouts_are_spread_evenly_over_the_interval() -> None:
    rollouts = [rollout_of(f"team-{i // 100:02d}", f"svc-{i:04d}") for i in range(1000)]
    phases = [tick_phase(r) for r in rollouts]
    per_second = Counter(phases)
    assert sorted(per_second) == [float(s) for s in range(10)], "whole seconds, every second of the 10 s interval"
    assert max(per_second.values()) <= 130, f"no second holds much more than its tenth: {sorted(per_second.items())}"
    assert phases == [tick_phase(r) for r in rollouts], "deterministic: a restarted daemon keeps the phases"
    assert tick_phase(rollout_of("team-00", "svc-0000", 3)) != tick_phase(rollout_of("team-00", "svc-0000", 2)) \
        or tick_phase(rollout_of("team-00", "svc-0000", 4)) != tick_phase(rollout_of("team-00", "svc-0000", 2)), \
        "a new revision gets a phase of its own"


class SpreadingMeasurer(ScriptedMeasurer):
    """The scripted readings, with the daemon's spreading of first ticks."""

    def __init__(self, clock: FakeClock, provider: ProviderMeasurer) -> None:
        super().__init__(clock, lambda _t: 0.01)
        self.first_tick = provider.first_tick


async def test_the_first_tick_moves_by_the_phase_and_later_ticks_keep_it() -> None:
    clock = FakeClock(START + 0.4)
    async with aiohttp.ClientSession() as session:
        spreading = ProviderMeasurer(prometheus_url=None, kube=None, session=session, proxy=None, clock=clock,
                                     spread_first_tick=True)
        plain = ProviderMeasurer(prometheus_url=None, kube=None, session=session, proxy=None, clock=clock)
        rollout = make_rollout(for_=60)
        phase = tick_phase(rollout)
        measurer = SpreadingMeasurer(clock, spreading)
        analysis = Analysis(rollout, AnalysisState(), measurer=measurer, decider=RecordingDecider(clock), clock=clock)
        expected = math.ceil(START + 30) + phase
        assert analysis.view()["firstTickAt"] == expected
        assert plain.first_tick(rollout, START + 30.25) == START + 30.25, "not spreading: the policy's own time"
        await drive(analysis, clock, complete_at=1000, until=30 + phase + 25)
        assert measurer.asked_at[:3] == [30 + phase, 40 + phase, 50 + phase]
        await spreading.close()
        await plain.close()
