"""One analysis per live rollout: wait, measure, evaluate, decide — until a decision or the bake time ends.

Schedule (seconds from the policy's `analysis`): the first evaluation is at `started_at +
initialDelay` (when the measurer spreads ticks, moved to a whole second plus a per-rollout phase of
less than `interval`: see `daemon.measure.tick_phase`), then one every `interval`, measured from the
planned tick (not from when the last one finished) so ticks do not drift. The analysis passes once
the rollout is complete and `bakeTime` has passed since completion with no rule asking for more than
`notify`. If a review was asked for, the end of the bake time ends the analysis without passing it:
the review stays pending (phase `review`) until a human approves the rollback or a newer deploy
replaces the revision. The bake time never ends before the first evaluation, nor while a rule cannot
be judged because a provider is in error (Prometheus down): the analysis waits until it can tell
good from bad.

Per tick: every signal is measured concurrently, the pure evaluator judges the rules with the
timers carried from the last tick, each evaluation is logged (rule, values, baseline, verdict),
and the verdict goes to the `Decider`:

* rollback → the decider rolls back; the analysis ends;
* review → a human is paged once; the analysis goes on (a later rollback verdict still acts);
* notify → Slack once per rule; the analysis goes on;
* pass → nothing, unless the bake time is over: then the analysis passed.

Pushed evidence (an Alertmanager alert for the rollout) wakes the analysis between two ticks: it
evaluates at once, at the time it was woken, and then keeps its schedule. The first evaluation
still waits for `initialDelay`.

Baselines (`baseline: previous` / `stable`) are measured once, before the first tick; a
`baseline: concurrent` one is measured again every tick, on the previous revision's pods. The
per-rule timers and the phase are saved in the Deployment's state annotation whenever they
change, so a restarted daemon resumes with its `for:` timers intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from daemon.analysis_seams import (
    Decider,
    EvaluationObserver,
    Measurer,
    Spreading,
    Wakeable,
    describe_baselines,
    evidence_of,
    summarise,
    unusable,
)
from daemon.clock import Clock
from daemon.kube.state import AnalysisState
from daemon.lifecycle import Event
from daemon.measurement import Measurement, Phase
from daemon.metrics import Metrics
from daemon.rollout import Rollout
from daemon.rules.evaluate import EvaluationState, RuleResult, RuleStatus, Verdict, evaluate
from daemon.rules.model import Action, BaselineMode, Unavailable
from daemon.signals.factory import ProviderKind
from daemon.view.history import AnalysisHistory
from daemon.view.schema import Running, analysis_item, gauges_item

log = structlog.get_logger("rollguard.analysis")


class Analysis:
    """The analysis task of one rollout; `run()` returns when it reached an outcome."""

    def __init__(self, rollout: Rollout, state: AnalysisState, *, measurer: Measurer, decider: Decider,
                 clock: Clock, metrics: Metrics | None = None, max_action: Action = Action.ROLLBACK,
                 on_evaluation: EvaluationObserver | None = None) -> None:
        """`on_evaluation`: sees every evaluation (`rollguard replay` records them; the daemon needs none)."""
        self.rollout = rollout
        self.state = state
        self._measurer = measurer
        self._decider = decider
        self._clock = clock
        self._metrics = metrics
        self._max_action = max_action
        self._on_evaluation = on_evaluation
        self._completed = asyncio.Event()
        self.completed_at: float | None = state.completed_at
        if self.completed_at is not None:
            self._completed.set()
        self.last_verdict: Verdict | None = None
        self.last_values: dict[str, Any] = {}
        self.baselines: dict[str, Any] = {}
        self.evaluations = 0
        self._first_tick: float | None = None
        self._notified: set[str] = {str(r) for r in (state.decision or {}).get("notified", [])}
        self._reviewed = state.phase == "review"
        self._unjudged_since_error = False
        self._wake: asyncio.Event | None = None
        self.history = AnalysisHistory()
        """Readings and rule moments, for `/api/v2/analyses`, `rollguard get` and the live page."""
        self.ended_at: float | None = None
        self._log = log.bind(namespace=rollout.id.namespace, deployment=rollout.id.name,
                             revision=rollout.id.revision, policy=rollout.policy.name)

    def rollout_completed(self, at: float) -> None:
        """The rollout reached complete (all replicas new and available): the bake time starts."""
        if self.completed_at is None:
            self.completed_at = at
            self.state = replace(self.state, completed_at=at)
            self._completed.set()

    def first_tick_at(self) -> float:
        """When the first evaluation is planned (epoch s): `started_at + initialDelay`, moved later by the
        measurer's phase for this rollout when it spreads ticks (`Spreading`)."""
        if self._first_tick is None:
            planned = self.rollout.started_at + self.rollout.policy.analysis.initial_delay
            if isinstance(self._measurer, Spreading):
                planned = self._measurer.first_tick(self.rollout, planned)
            self._first_tick = planned
        return self._first_tick

    def view(self) -> dict[str, Any]:
        """A JSON-able summary for `/api/v1/analyses`."""
        return {
            "namespace": self.rollout.id.namespace, "deployment": self.rollout.id.name,
            "revision": self.rollout.id.revision, "podTemplateHash": self.rollout.hash,
            "policy": self.rollout.policy.name, "phase": self.state.phase, "startedAt": self.rollout.started_at,
            "firstTickAt": self.first_tick_at(),
            "completedAt": self.completed_at, "evaluations": self.evaluations, "values": self.last_values,
            "baselines": self.baselines,
            "verdict": None if self.last_verdict is None else {
                "action": self.last_verdict.action.value, "reason": self.last_verdict.reason},
            # Built only when `/api/v2/analyses` asks (`daemon.view.collect`); `/api/v1/analyses` leaves it out.
            "detail": self.detail,
        }

    def detail(self, *, with_history: bool = True) -> dict[str, Any]:
        """This analysis as an item of `/api/v2/analyses` (`daemon.view.schema`), now."""
        return analysis_item(self._running(), now=self._clock.now(), with_history=with_history)

    def _running(self) -> Running:
        return Running(self.rollout, self.state, self.history, self.last_verdict, self.evaluations,
                       self.completed_at, self.ended_at)

    async def run(self) -> None:
        self.ended_at = None
        self._publish()
        try:
            await self._run()
        finally:
            self.ended_at = self._clock.now()
            if self._metrics is not None:
                self._metrics.forget_analysis(*self.rollout.key)

    async def _run(self) -> None:
        timing = self.rollout.policy.analysis
        self._log.info("analysis started", initial_delay=timing.initial_delay, interval=timing.interval,
                       bake_time=timing.bake_time, resumed=bool(self.state.rules))
        first_tick = self.first_tick_at()
        await self._sleep_until(first_tick)
        fixed = baselines = await self._measurer.measure_baselines(self.rollout)
        self.baselines = describe_baselines(baselines)
        concurrent = any(s.baseline_mode is BaselineMode.CONCURRENT for s in self.rollout.policy.signals.values())
        if baselines:
            self._log.info("baselines measured", baselines=summarise(baselines),
                           problems={n: m.message for n, m in baselines.items()
                                     if m.phase in (Phase.ERROR, Phase.INCONCLUSIVE)})
        self.history.baselines = baselines
        eval_state = self._timers()
        if isinstance(self._measurer, Wakeable):
            self._wake = self._measurer.wakeup(self.rollout)
        tick, planned = self._first_evaluation(first_tick)
        at = tick  # when this evaluation happens: the planned tick, or earlier when woken
        while True:
            if self._bake_over(at) and not self._rules_pending(at) and not self._cannot_tell():
                if self._reviewed:
                    # A human was paged to review a rollback: the rollout has not "passed", and the
                    # approval must stay valid (phase review) until the human decides.
                    self._log.info("bake time over; the review stays pending", evaluations=self.evaluations)
                    return
                self.state = await self._decider.passed(self.rollout, self.last_verdict, self.state)
                self._log.info("analysis passed", evaluations=self.evaluations)
                return
            started = time.perf_counter()
            measurements = await self._measurer.measure(self.rollout)
            if any(unusable(m) for m in fixed.values()):
                fixed = await self._measure_baselines_again(fixed)
                baselines = fixed
                self.baselines = describe_baselines(baselines)
            if concurrent:
                baselines = await self._measurer.measure_concurrent(self.rollout, fixed)
                self.baselines = describe_baselines(baselines)
            # Held times count from the scheduled evaluation times (Prometheus' `for:`), not from when
            # the answers arrived: otherwise `for` minus the query time waits one interval more.
            verdict, eval_state = evaluate(self.rollout.policy, measurements, baselines, eval_state, at,
                                           pending_until=self.rollout.started_at + timing.pending_grace)
            self.evaluations += 1
            self.last_verdict = verdict
            self._track_unjudged(verdict)
            self.last_values = summarise(measurements)
            self._observe(measurements, verdict, started, late=self._clock.now() - planned if at >= tick else None)
            self._log_evaluation(verdict, measurements, baselines)
            self.history.record(at, measurements, verdict)
            if self._on_evaluation is not None:
                self._on_evaluation(at, verdict, measurements, baselines)
            if await self._act(verdict, eval_state, measurements):
                return
            if at >= tick:  # an evaluation out of schedule keeps the planned tick
                tick, planned = self._next_tick(planned + timing.interval)
            self.history.next_at = tick
            self._publish()
            at = await self._wait(tick)

    async def _wait(self, tick: float) -> float:
        """Sleep until `tick`, or until woken by pushed evidence; returns when to evaluate (epoch seconds)."""
        wake = self._wake
        if wake is None:
            await self._sleep_until(tick)
            return tick
        if not wake.is_set() and tick > self._clock.now():
            sleeper = asyncio.ensure_future(self._clock.sleep(tick - self._clock.now()))
            waiter = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waiter):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if not wake.is_set():
            return tick
        wake.clear()
        now = self._clock.now()
        if now < tick:
            self._log.info("woken by a pushed alert: evaluating out of schedule")
        return min(now, tick)

    async def _measure_baselines_again(self, fixed: dict[str, Measurement]) -> dict[str, Measurement]:
        """`fixed` with its unusable baselines measured again: they are taken at a past moment (the rollout's
        start, the stable revision's last), which Prometheus may not have had the samples of at the first try."""
        again = await self._measurer.measure_baselines(self.rollout)
        redone = {n: m for n, m in again.items() if unusable(fixed.get(n, m)) and not unusable(m)}
        if redone:
            self._log.info("baselines measured again", baselines=summarise(redone))
        return {**fixed, **redone}

    def _timers(self) -> EvaluationState:
        """The `for:` timers saved in the state; unreadable timers restart from nothing (logged)."""
        if not self.state.rules:
            return EvaluationState()
        try:
            return EvaluationState.from_dict(self.state.rules)
        except ValueError as exc:
            self._log.warning("ignoring saved rule timers", error=str(exc))
            return EvaluationState()

    def _bake_over(self, tick: float) -> bool:
        return self.completed_at is not None and tick >= self.completed_at + self.rollout.policy.analysis.bake_time

    def _rules_pending(self, tick: float) -> bool:
        """Whether a rule's condition is true but its `for` has not elapsed yet. The bake time is then
        extended until the rule either clears or fires (by up to twice the longest `for`; a rule that turned
        true only after that, when an outage held it, still gets its whole `for`), so a rollout is never
        declared good while it is visibly going bad."""
        if self.last_verdict is None or self.completed_at is None:
            return False
        longest = max((rule.for_ for rule in self.rollout.policy.rules), default=0.0)
        limit = self.completed_at + self.rollout.policy.analysis.bake_time + 2 * longest
        rules = {rule.name: rule for rule in self.rollout.policy.rules}
        interval = self.rollout.policy.analysis.interval
        for result in self.last_verdict.rules:
            if result.status is not RuleStatus.PENDING:
                continue
            if tick < limit:
                return True
            # Past the limit, a rule that turned true only now (after an outage held it) still gets its
            # whole `for`: a condition that stays true fires within it, one that does not clears.
            rule = rules.get(result.rule)
            since = result.pending_since
            if rule is not None and since is not None and tick < since + rule.for_ + interval:
                return True
        return any(self._holding(r) for r in self.last_verdict.rules)

    def _holding(self, result: RuleResult) -> bool:
        """Whether a rule is held by missing data with `hold` (its default): it asks for review once the data
        has been missing for its `for`, so the bake time waits for that — or for the data — however late
        the hold began (it is bounded by the `for` itself, not by the bake time's extension limit)."""
        rule = next((r for r in self.rollout.policy.rules if r.name == result.rule), None)
        if rule is None or result.status is not RuleStatus.HELD or result.unavailable is None:
            return False
        choice = rule.on_error if result.unavailable is Phase.ERROR else rule.on_inconclusive
        return choice is Unavailable.HOLD

    def _cannot_tell(self) -> bool:
        """Whether the bake time must wait: no evaluation yet, or a provider error (Prometheus down, pod
        logs unreadable) left a rule unjudged and no reading since has judged it. An outage of the
        measuring side must not pass a rollout any more than fail it, so the analysis goes on (the held
        rule has asked for review) until it can tell good from bad again."""
        return self.last_verdict is None or self._unjudged_since_error

    def _track_unjudged(self, verdict: Verdict) -> None:
        """After each evaluation: note rules held by a provider error, until they are judged again.

        Rules whose `onError`/`onInconclusive` is `ignore` or `pass` do not count: the SRE said so.
        Right after an outage the data is inconclusive for a while (a `rate()` needs fresh samples), so
        once in error a rule stays unjudged until it is decided, not merely until the error ends."""
        rules = {rule.name: rule for rule in self.rollout.policy.rules}
        held = []
        for result in verdict.rules:
            rule = rules.get(result.rule)
            if rule is None or result.status is not RuleStatus.HELD:
                continue
            choice = rule.on_error if result.unavailable is Phase.ERROR else rule.on_inconclusive
            if choice not in (Unavailable.IGNORE, Unavailable.PASS):
                held.append(result)
        if any(result.unavailable is Phase.ERROR for result in held):
            self._unjudged_since_error = True
        elif not held:
            self._unjudged_since_error = False

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock.now()
        if delay > 0:
            await self._clock.sleep(delay)

    async def _act(self, verdict: Verdict, eval_state: EvaluationState,
                   measurements: Mapping[str, Measurement]) -> bool:
        """Hand the verdict to the decider; True when the analysis is over."""
        timers = eval_state.to_dict()
        action = verdict.action
        if action.severity > self._max_action.severity:
            # A template rollguard rolled back before came back: ask a human instead of flapping.
            action = self._max_action
        if action is Action.ROLLBACK:
            self.state = replace(self.state, rules=timers)
            self.state = await self._decider.rollback(self.rollout, verdict, self.state,
                                                      evidence=evidence_of(verdict.deciding, measurements))
            return True
        if action is Action.REVIEW and not self._reviewed:
            self._reviewed = True
            reviewing = tuple(r for r in verdict.rules if r.action.severity >= Action.REVIEW.severity)
            self.state = await self._decider.review(self.rollout, verdict, replace(self.state, rules=timers),
                                                    event=Event.REVIEW_RULE,
                                                    evidence=evidence_of(reviewing, measurements))
        # Held rules (missing data) may ask for notify too; each rule is announced once per rollout.
        matched_notify = [r.rule for r in verdict.rules
                          if r.action is Action.NOTIFY and r.status in (RuleStatus.MATCHED, RuleStatus.HELD)
                          and r.rule not in self._notified]
        if matched_notify:
            self._notified.update(matched_notify)
            decision = dict(self.state.decision or {})
            decision["notified"] = sorted(self._notified)
            noted = tuple(r for r in verdict.rules if r.rule in matched_notify)
            self.state = await self._decider.notify(self.rollout, verdict,
                                                    replace(self.state, rules=timers, decision=decision),
                                                    evidence=evidence_of(noted, measurements))
        if timers != dict(self.state.rules):
            self.state = replace(self.state, rules=timers)
            await self._decider.save(self.rollout, self.state)
        return False

    def _observe(self, measurements: Mapping[str, Measurement], verdict: Verdict, started: float,
                 late: float | None) -> None:
        if self._metrics is not None:
            signals = self.rollout.policy.signals
            self._metrics.evaluated(verdict.action.value, time.perf_counter() - started, late,
                                    [ProviderKind.of(signals[n]).value if n in signals else "unknown"
                                     for n, m in measurements.items() if m.phase is Phase.ERROR])

    def _first_evaluation(self, first_tick: float) -> tuple[float, float]:
        """When to evaluate first, and the planned tick it stands for. Late (a busy start, a resumed
        analysis, baselines measured slowly) it is made at once and stands for the latest tick of the
        schedule `first_tick + k * interval`, so the ticks after it stay on that schedule: on the whole
        second its phase chose, shared with the rollouts whose queries are batched with it."""
        now = self._clock.now()
        if now <= first_tick:
            return first_tick, first_tick
        interval = self.rollout.policy.analysis.interval
        return now, first_tick + ((now - first_tick) // interval) * interval

    def _next_tick(self, tick: float) -> tuple[float, float]:
        """When to evaluate next, and the planned tick that evaluation stands for. After a slow tick the
        ticks already past are skipped (counted) instead of evaluated in a burst; the evaluation made at
        once stands for the latest of them, and the schedule goes on from that planned tick."""
        now, interval = self._clock.now(), self.rollout.policy.analysis.interval
        if tick > now:
            return tick, tick
        skipped = int((now - tick) // interval)
        if skipped and self._metrics is not None:
            self._metrics.ticks_skipped.inc(skipped)
        return now, tick + skipped * interval

    def _publish(self) -> None:
        """The per-Deployment gauges of `/metrics`, after each evaluation."""
        if self._metrics is not None:
            self._metrics.observe_analysis(*self.rollout.key,
                                           detail=gauges_item(self._running(), now=self._clock.now()))

    def _log_evaluation(self, verdict: Verdict, measurements: Mapping[str, Measurement],
                        baselines: Mapping[str, Measurement]) -> None:
        self._log.info(
            "evaluation",
            verdict=verdict.action.value,
            reason=verdict.reason,
            values=summarise(measurements),
            baselines=summarise(baselines),
            rules={r.rule: r.status.value for r in verdict.rules},
            problems={n: m.message for n, m in measurements.items()
                      if m.phase in (Phase.ERROR, Phase.INCONCLUSIVE, Phase.PENDING)},
        )
