"""Replay one past rollout with the daemon's own analysis, on a clock set to the historical ticks.

No second engine: `daemon.analysis.Analysis` runs unchanged (initialDelay, interval, bakeTime, `for:`,
pendingGrace, the bake-time extensions, missing-data handling), with

* `ReplayClock`: time that jumps to each planned tick instead of waiting for it, and stops the analysis
  when the rollout was replaced by the next one (the daemon stops analysing a replaced revision);
* `ReplayMeasurer`: the daemon's `ProviderMeasurer` whose Prometheus client reads "now" from that clock,
  so each tick is `GET /api/v1/query?time=<tick>` with the same rendered PromQL, and baselines are
  measured at their historical moments (`baseline: concurrent` on the old pods while
  kube-state-metrics recorded any ready); signals that cannot be replayed (pod logs, HTTP and
  WebSocket checks, pushed alerts) are INCONCLUSIVE "not replayable";
* `Recorder`: a `Decider` that writes nothing and remembers what the daemon would have done.

A rule held because it needs a signal that cannot be replayed is "unknown" at that tick, never "pass":
its own action could have applied had the signal been there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from daemon.analysis import Analysis
from daemon.baselines import StableBaseline, choose_stable
from daemon.kube.client import KubeClient
from daemon.kube.rollout_state import POD_TEMPLATE_HASH
from daemon.kube.state import AnalysisState, Passed
from daemon.lifecycle import Event
from daemon.measure import ProviderMeasurer
from daemon.measurement import Measurement, Phase
from daemon.replay.ksm import quote
from daemon.rollout import Rollout
from daemon.rules.durations import format_duration
from daemon.rules.evaluate import RuleStatus, Verdict
from daemon.rules.model import Action, PrometheusSignal, RollbackPolicy, Unavailable
from daemon.signals.factory import ProviderKind
from daemon.signals.promapi import PrometheusClient, PrometheusError

NOT_REPLAYABLE = "not replayable"
HORIZON = 86400.0
"""Seconds after its start a rollout is replayed at most: an analysis held open that long (a rule waiting
for data that never came back) would otherwise be replayed tick by tick up to the present."""


class Replaced(Exception):
    """The replayed rollout was replaced by the next one (or the present was reached) before its analysis ended."""


class ReplayClock:
    """Historical time: `sleep` moves `now` forward at once; past `end` it raises `Replaced`."""

    def __init__(self, start: float, *, end: float) -> None:
        self._now = start
        self.end = end
        """When the next rollout started, or the present for the latest one (epoch seconds): there is no
        history after it."""

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        target = self._now + max(0.0, seconds)
        # An evaluation due the very moment the next rollout started still happens: the daemon learns of
        # that rollout only after.
        if target > self.end:
            self._now = self.end
            raise Replaced
        self._now = target
        await asyncio.sleep(0)


def without_holds(policy: RollbackPolicy, skipped: Mapping[str, str]) -> RollbackPolicy:
    """`policy` with each rule that reads a signal in `skipped` set to `onInconclusive: ignore`.

    The daemon had those readings; the replay has none, so such a rule is "unknown" (the engine says
    so) rather than held: a hold would keep the bake time waiting for data that can never come, and
    then ask for a review the daemon never asked for."""
    rules = tuple(replace(rule, on_inconclusive=Unavailable.IGNORE) if rule.when.signals & skipped.keys() else rule
                  for rule in policy.rules)
    return replace(policy, rules=rules)


def not_replayable(policy: RollbackPolicy) -> dict[str, str]:
    """Signal name → why it cannot be measured in the past, for every non-Prometheus signal."""
    reasons = {
        ProviderKind.LOGS: "pod logs of past revisions are gone",
        ProviderKind.HTTP: "an HTTP check can only be made now",
        ProviderKind.WEBSOCKET: "a WebSocket check can only be made now",
        ProviderKind.ALERTS: "the alerts Alertmanager pushed then are not kept",
    }
    found = {}
    for name, spec in policy.signals.items():
        if not isinstance(spec.provider, PrometheusSignal):
            try:
                found[name] = reasons.get(ProviderKind.of(spec), "no past readings of this kind")
            except ValueError:
                found[name] = "no past readings of this kind"
    return found


@dataclass(frozen=True)
class Then:
    """What the cluster recorded as it was when a rollout started (for its stable baseline)."""

    replica_sets: Sequence[Mapping[str, Any]]
    """The Deployment's ReplicaSets up to that revision, each with its revision number then."""
    passed: Sequence[Passed]
    """Every revision rollguard recorded as passed (those passed before the start are used)."""


class ReplayMeasurer(ProviderMeasurer):
    """The daemon's measurer on historical time; non-Prometheus signals are INCONCLUSIVE "not replayable"."""

    def __init__(self, *, prometheus_url: str, kube: KubeClient | None, session: aiohttp.ClientSession,
                 clock: ReplayClock, then: Then | None = None, timeout: float = 30.0) -> None:
        super().__init__(prometheus_url=prometheus_url, kube=kube, session=session, proxy=None, clock=clock,
                         timeout=timeout)
        self.then = then
        # The client's "now" is the replay clock's tick, rounded to the second as the daemon's is.
        self._client = PrometheusClient(prometheus_url, session, timeout=timeout, tick=1.0, clock=clock)
        self._prometheus = self._client

    async def measure(self, rollout: Rollout) -> dict[str, Measurement]:
        skipped = not_replayable(rollout.policy)
        measured = await super().measure(rollout)
        for name, why in skipped.items():
            measured[name] = Measurement(Phase.INCONCLUSIVE, None, f"{NOT_REPLAYABLE}: {why}")
        return measured

    async def _stable(self, rollout: Rollout) -> StableBaseline | str:
        if self.then is None:
            return await super()._stable(rollout)
        # The ReplicaSets as they were when the rollout started, and the revisions that had passed by then:
        # an undo since has renumbered a re-used ReplicaSet, and later verdicts were not known yet.
        passed = [p for p in self.then.passed if p.at < rollout.started_at]
        return choose_stable(rollout.ctx, self.then.replica_sets, passed, started_at=rollout.started_at,
                             min_age=rollout.policy.analysis.stable_min_age)

    async def _ready_pods(self, namespace: str, pod_template_hash: str) -> int | str:
        # Which pods were ready at a past tick is not on the cluster any more; kube-state-metrics recorded how
        # many of the ReplicaSet's were (`baseline: concurrent` measures the old pods while any is ready).
        name = next((str(rs["metadata"]["name"]) for rs in (self.then.replica_sets if self.then else ())
                     if ((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH) == pod_template_hash),
                    None)
        if name is None:
            return "the previous revision's ReplicaSet is not known, so neither are its ready pods then"
        promql = (f'sum(kube_replicaset_status_ready_replicas{{namespace="{quote(namespace)}",'
                  f'replicaset="{quote(name)}"}})')
        try:
            result = await self._client.query(promql)
        except PrometheusError as exc:
            return f"its ready pods then are unknown: {exc}"
        if not result.samples or result.samples[0].value != result.samples[0].value:  # none, or NaN
            return f"kube-state-metrics recorded no ready pods of {name} at that moment"
        return int(result.samples[0].value)


@dataclass(frozen=True)
class Tick:
    """One replayed evaluation."""

    at: float
    """The tick, epoch seconds."""
    verdict: Verdict
    action: Action
    """The most severe action of the rules that could be judged."""
    unknown: tuple[str, ...]
    """Rules held by a signal that cannot be replayed."""
    values: Mapping[str, float | bool | None]
    """Each signal's value (None when unavailable)."""
    baselines: Mapping[str, float | None]
    messages: Mapping[str, str]
    """Signal name → the measurement's message."""


@dataclass
class Recorder:
    """A `Decider` that writes nothing: it records what the daemon would have done, and when."""

    rollback_at: float | None = None
    review_at: float | None = None
    notify_at: float | None = None
    passed_at: float | None = None
    deciding: Verdict | None = None
    """The verdict that decided the outcome (the first review or notify, or the rollback)."""
    clock: ReplayClock | None = None

    def _now(self) -> float:
        assert self.clock is not None
        return self.clock.now()

    async def rollback(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                       evidence: tuple[str, ...] = ()) -> AnalysisState:
        self.rollback_at, self.deciding = self._now(), verdict
        return state

    async def review(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *, event: Event,
                     evidence: tuple[str, ...] = ()) -> AnalysisState:
        if self.review_at is None:
            self.review_at = self._now()
        return state

    async def notify(self, rollout: Rollout, verdict: Verdict, state: AnalysisState, *,
                     evidence: tuple[str, ...] = ()) -> AnalysisState:
        if self.notify_at is None:
            self.notify_at = self._now()
        return state

    async def passed(self, rollout: Rollout, verdict: Verdict | None, state: AnalysisState) -> AnalysisState:
        self.passed_at = self._now()
        return state

    async def save(self, rollout: Rollout, state: AnalysisState) -> None:
        return None


@dataclass
class Replay:
    """The outcome of replaying one rollout."""

    rollout: Rollout
    outcome: str
    """`rolled back`, `reviewed`, `notified`, `passed`, or `unknown` (nothing fired, but a rule could not be judged)."""
    at: float | None
    """When the outcome was reached (epoch seconds), None when the rollout was replaced first."""
    rule: str | None
    """The rule that decided it (the first one), None for passed or unknown."""
    message: str
    """The deciding rule's message with its values, or why the outcome is what it is."""
    ticks: list[Tick] = field(default_factory=list)
    not_replayable: dict[str, str] = field(default_factory=dict)
    replaced: bool = False
    """The next rollout started before the analysis ended."""
    source: str = ""
    """What told the rollout's start: `ReplicaSet`, `rollguard state`, `kube-state-metrics` or `--at`."""

    @property
    def unknown_rules(self) -> list[str]:
        """Rules that could not be judged at some tick, in order of first appearance."""
        seen: list[str] = []
        for tick in self.ticks:
            seen.extend(r for r in tick.unknown if r not in seen)
        return seen


def _judged_action(verdict: Verdict, unknown: set[str]) -> Action:
    return max((r.action for r in verdict.rules if r.rule not in unknown), key=lambda a: a.severity,
               default=Action.PASS)


async def replay_rollout(rollout: Rollout, *, prometheus_url: str, kube: KubeClient | None,
                         session: aiohttp.ClientSession, ended_at: float | None, now: float,
                         completed_at: float | None = None, failed_at: float | None = None, source: str = "",
                         then: Then | None = None, timeout: float = 30.0) -> Replay:
    """Replay `rollout` (its `started_at` in the past) up to `ended_at`, the next rollout's start, or
    `now` (epoch seconds) for the latest one.

    `completed_at`: when the rollout completed, when known; otherwise the bake time counts from the
    start (history does not record when the last new pod became ready). `then`: the ReplicaSets and
    verdicts as they were (default: as the cluster has them now). `failed_at`: when the rollout
    failed (its progress deadline passed), as recorded: the analysis stops there and, unless a rule
    decided first, the policy's `onFailure` is the outcome, as the daemon does."""
    horizon = rollout.started_at + HORIZON
    end = min(t for t in (ended_at, failed_at, now, horizon) if t is not None)
    clock = ReplayClock(rollout.started_at, end=end)
    skipped = not_replayable(rollout.policy)
    reported = rollout
    rollout = replace(rollout, policy=without_holds(rollout.policy, skipped))
    ticks: list[Tick] = []

    def record(at: float, verdict: Verdict, measurements: Mapping[str, Measurement],
               baselines: Mapping[str, Measurement]) -> None:
        needs = {rule.name: rule.when.signals for rule in rollout.policy.rules}
        unknown = {r.rule for r in verdict.rules
                   if r.status is RuleStatus.HELD and needs.get(r.rule, frozenset()) & skipped.keys()}
        ticks.append(Tick(
            at=at, verdict=verdict, action=_judged_action(verdict, unknown),
            unknown=tuple(r.rule for r in verdict.rules if r.rule in unknown),
            values={n: (m.value if m.phase in (Phase.OK, Phase.FAILED) else None) for n, m in measurements.items()},
            baselines={n: (m.value if m.phase is Phase.OK and not isinstance(m.value, bool) else None)
                       for n, m in baselines.items()},
            messages={n: m.message for n, m in measurements.items()}))

    recorder = Recorder(clock=clock)
    measurer = ReplayMeasurer(prometheus_url=prometheus_url, kube=kube, session=session, clock=clock, then=then,
                              timeout=timeout)
    analysis = Analysis(rollout, AnalysisState(revision=rollout.id.revision, pod_template_hash=rollout.hash,
                                               started_at=rollout.started_at),
                        measurer=measurer, decider=recorder, clock=clock, on_evaluation=record)
    if failed_at is None:  # a rollout that failed never completed: its bake time never started
        analysis.rollout_completed(completed_at if completed_at is not None else rollout.started_at)
    replaced = False
    try:
        await analysis.run()
    except Replaced:
        replaced = True
    finally:
        await measurer.close()
    failed = replaced and failed_at is not None and end == failed_at
    by_next = end not in (now, failed_at, horizon)
    if by_next:
        stopped = "replaced by the next rollout before the analysis ended"
    elif end == horizon:
        stopped = f"still analysing {format_duration(HORIZON)} after its start, where replay stops"
    else:
        stopped = "still analysing at the time of the replay"
    outcome = _outcome(reported, recorder, ticks, skipped, replaced and by_next, stopped)
    if failed and outcome.at is None:
        assert failed_at is not None
        action = reported.policy.on_failure
        outcome = Replay(reported, FAILURE_OUTCOMES[action], failed_at, "onFailure",
                         f"the rollout failed (its progress deadline passed, as rollguard recorded): "
                         f"onFailure: {action.value}", ticks, skipped)
    outcome.source = source
    return outcome


FAILURE_OUTCOMES = {Action.ROLLBACK: "rolled back", Action.REVIEW: "reviewed", Action.NOTIFY: "notified",
                    Action.PASS: "passed"}
"""The outcome of a failed rollout by the policy's `onFailure`."""


def _outcome(rollout: Rollout, recorder: Recorder, ticks: list[Tick], skipped: dict[str, str],
             replaced: bool, stopped: str) -> Replay:
    def first(action: Action) -> Tick | None:
        return next((t for t in ticks if t.action.severity >= action.severity), None)

    for action, outcome in ((Action.ROLLBACK, "rolled back"), (Action.REVIEW, "reviewed"),
                            (Action.NOTIFY, "notified")):
        tick = first(action) if action is not Action.ROLLBACK or recorder.rollback_at is not None else None
        if tick is not None:
            deciding = next(r for r in tick.verdict.rules if r.action.severity >= action.severity
                            and r.rule not in tick.unknown)
            return Replay(rollout, outcome, tick.at, deciding.rule, deciding.message, ticks, skipped, replaced)
    unknown = [rule for t in ticks for rule in t.unknown]
    if unknown:
        return Replay(rollout, "unknown", None, None,
                      f"nothing fired, but {', '.join(dict.fromkeys(unknown))} could not be judged: "
                      f"{', '.join(sorted(skipped))} {'is' if len(skipped) == 1 else 'are'} {NOT_REPLAYABLE}",
                      ticks, skipped, replaced)
    if recorder.passed_at is not None:
        return Replay(rollout, "passed", recorder.passed_at, None,
                      f"no rule fired in {len(ticks)} evaluations", ticks, skipped, replaced)
    return Replay(rollout, "unknown", None, None, f"{stopped} ({len(ticks)} evaluations, no rule fired)",
                  ticks, skipped, replaced)
