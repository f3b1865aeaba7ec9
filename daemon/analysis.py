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

Baselines (`baseline: previous` / `stable`) are measured once, before the first tick; a
`baseline: concurrent` one is measured again every tick, on the previous revision's pods. The
per-rule timers and the phase are saved in the Deployment's state annotation whenever they
change, so a restarted daemon resumes with its `for:` timers intact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import structlog

from daemon.clock import Clock
from daemon.kube.state import AnalysisState
from daemon.lifecycle import Event
from daemon.measurement import Measurement, Phase
from daemon.metrics import Metrics
from daemon.rollout import Rollout
from daemon.rules.evaluate import EvaluationState, RuleResult, RuleStatus, Verdict, evaluate
from daemon.rules.model import Action, BaselineMode, Unavailable
from daemon.signals.factory import ProviderKind

log = structlog.get_logger("rollguard.analysis")


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


MAX_EVIDENCE = 10
"""Measured evidence lines (log lines, failed checks) handed to one alert, at most."""


def _evidence(results: tuple[RuleResult, ...], measurements: Mapping[str, Measurement]) -> tuple[str, ...]:
    """What the providers quoted (matching log lines, response bodies) for the signals these rules read."""
    lines: list[str] = []
    for result in results:
        for name in result.values:
            measurement = measurements.get(name)
            if measurement is not None:
                lines.extend(line for line in measurement.evidence if line not in lines)
    return tuple(lines[:MAX_EVIDENCE])


def _summarise(measurements: Mapping[str, Measurement]) -> dict[str, Any]:
    return {name: (m.value if m.phase in (Phase.OK, Phase.FAILED) else m.phase.value)
            for name, m in measurements.items()}


class Analysis:
    """The analysis task of one rollout; `run()` returns when it reached an outcome."""

    def __init__(self, rollout: Rollout, state: AnalysisState, *, measurer: Measurer, decider: Decider,
                 clock: Clock, metrics: Metrics | None = None, max_action: Action = Action.ROLLBACK) -> None:
        self.rollout = rollout
        self.state = state
        self._measurer = measurer
        self._decider = decider
        self._clock = clock
        self._metrics = metrics
        self._max_action = max_action
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
        }

    async def run(self) -> None:
        timing = self.rollout.policy.analysis
        self._log.info("analysis started", initial_delay=timing.initial_delay, interval=timing.interval,
                       bake_time=timing.bake_time, resumed=bool(self.state.rules))
        first_tick = self.first_tick_at()
        await self._sleep_until(first_tick)
        baselines = await self._measurer.measure_baselines(self.rollout) if self.rollout.baseline_ctx else {}
        self.baselines = _describe_baselines(baselines)
        concurrent = any(s.baseline_mode is BaselineMode.CONCURRENT for s in self.rollout.policy.signals.values())
        if baselines:
            self._log.info("baselines measured", baselines=_summarise(baselines),
                           problems={n: m.message for n, m in baselines.items()
                                     if m.phase in (Phase.ERROR, Phase.INCONCLUSIVE)})
        eval_state = self._timers()
        tick = max(first_tick, self._clock.now())
        while True:
            if self._bake_over(tick) and not self._rules_pending(tick) and not self._cannot_tell():
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
            if concurrent:
                baselines = await self._measurer.measure_concurrent(self.rollout, baselines)
                self.baselines = _describe_baselines(baselines)
            # Held times count from the scheduled evaluation times (Prometheus' `for:`), not from when
            # the answers arrived: otherwise `for` minus the query time waits one interval more.
            verdict, eval_state = evaluate(self.rollout.policy, measurements, baselines, eval_state, tick,
                                           pending_until=self.rollout.started_at + timing.pending_grace)
            self.evaluations += 1
            self.last_verdict = verdict
            self._track_unjudged(verdict)
            self.last_values = _summarise(measurements)
            self._observe(measurements, verdict, started)
            self._log_evaluation(verdict, measurements, baselines)
            if await self._act(verdict, eval_state, measurements):
                return
            tick += timing.interval
            if tick <= self._clock.now():  # a slow tick: skip missed ticks instead of bursting
                tick = self._clock.now()
            await self._sleep_until(tick)

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
        extended until the rule either clears or fires (by at most twice the longest `for`), so a rollout
        is never declared good while it is visibly going bad."""
        if self.last_verdict is None or self.completed_at is None:
            return False
        longest = max((rule.for_ for rule in self.rollout.policy.rules), default=0.0)
        limit = self.completed_at + self.rollout.policy.analysis.bake_time + 2 * longest
        return tick < limit and any(r.status is RuleStatus.PENDING for r in self.last_verdict.rules)

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
                                                      evidence=_evidence(verdict.deciding, measurements))
            return True
        if action is Action.REVIEW and not self._reviewed:
            self._reviewed = True
            reviewing = tuple(r for r in verdict.rules if r.action.severity >= Action.REVIEW.severity)
            self.state = await self._decider.review(self.rollout, verdict, replace(self.state, rules=timers),
                                                    event=Event.REVIEW_RULE,
                                                    evidence=_evidence(reviewing, measurements))
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
                                                    evidence=_evidence(noted, measurements))
        if timers != dict(self.state.rules):
            self.state = replace(self.state, rules=timers)
            await self._decider.save(self.rollout, self.state)
        return False

    def _observe(self, measurements: Mapping[str, Measurement], verdict: Verdict, started: float) -> None:
        if self._metrics is None:
            return
        self._metrics.evaluations.inc()
        self._metrics.verdicts.labels(action=verdict.action.value).inc()
        self._metrics.evaluation_seconds.observe(time.perf_counter() - started)
        for name, m in measurements.items():
            if m.phase is Phase.ERROR:
                spec = self.rollout.policy.signals.get(name)
                provider = ProviderKind.of(spec).value if spec else "unknown"
                self._metrics.provider_errors.labels(provider=provider).inc()

    def _log_evaluation(self, verdict: Verdict, measurements: Mapping[str, Measurement],
                        baselines: Mapping[str, Measurement]) -> None:
        self._log.info(
            "evaluation",
            verdict=verdict.action.value,
            reason=verdict.reason,
            values=_summarise(measurements),
            baselines=_summarise(baselines),
            rules={r.rule: r.status.value for r in verdict.rules},
            problems={n: m.message for n, m in measurements.items()
                      if m.phase in (Phase.ERROR, Phase.INCONCLUSIVE, Phase.PENDING)},
        )


def _describe_baselines(baselines: Mapping[str, Measurement]) -> dict[str, Any]:
    """The baselines as the analyses API shows them: value, phase, message and revision."""
    return {name: {"value": m.value, "phase": m.phase.value, "message": m.message,
                   "revision": int(m.details["revision"]) if "revision" in m.details else None}
            for name, m in baselines.items()}
