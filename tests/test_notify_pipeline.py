"""The pipeline: dedup, retry with backoff under a fake clock, fan-out by the matrix, never blocking.

Most tests use small in-test notifiers (the Notifier Protocol is the seam) so that timing and
outcomes are exact; the matrix test at the end runs the real Slack and PagerDuty notifiers against
the local receivers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.notify import (
    PAGERDUTY_ACTIONS,
    ROUTES,
    Alert,
    AlertKind,
    Channel,
    NotificationPipeline,
    PrometheusMetrics,
    Redactor,
    SendResult,
    build_notifiers,
    rollout_key_for,
)
from daemon.notify.dedup import Deduplicator
from daemon.notify.delivery import RetryPolicy
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver
from tests.test_notify_kit import ROUTING_KEY, SLACK_TOKEN, eventually, make_alert


class Scripted:
    """A notifier that answers from a script of results and records when (clock time) it was called."""

    def __init__(self, name: str, channel: Channel, clock: FakeClock, script: Iterator[SendResult] | None = None,
                 *, answer: Callable[[Alert], SendResult] | None = None):
        """`script`: the results in call order; `answer`: a result per alert instead; neither: success."""
        self.name = name
        self.channel = channel
        self._clock = clock
        self._script = script
        self._answer = answer
        self.calls: list[tuple[float, Alert]] = []
        self.closed = False

    async def send(self, alert: Alert) -> SendResult:
        self.calls.append((self._clock.now(), alert))
        if self._answer is not None:
            return self._answer(alert)
        return next(self._script) if self._script is not None else SendResult.success()

    async def aclose(self) -> None:
        self.closed = True


class Hanging:
    """A notifier whose send never returns (a black-holed network)."""

    name = "hanging"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.started = asyncio.Event()

    async def send(self, alert: Alert) -> SendResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


async def _deliver_all(pipeline: NotificationPipeline, clock: FakeClock, *alerts: Alert) -> None:
    """Run the fake clock through every backoff until each of `alerts` is settled."""
    for alert in alerts:
        while not await pipeline.settled(alert, timeout=0.01):
            await eventually(lambda: bool(clock._sleepers), what="a backoff sleep")
            await clock.advance(clock._sleepers[0][0] - clock.now())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --- the matrix as data ---------------------------------------------------------------------------


def test_the_matrix_matches_the_runbook() -> None:
    slack_only = {k for k, chans in ROUTES.items() if chans == {Channel.SLACK}}
    assert slack_only == {AlertKind.ROLLOUT_STARTED, AlertKind.ROLLOUT_COMPLETE, AlertKind.NOTIFY_MATCHED,
                          AlertKind.SUPERSEDED}
    paging = {k for k, chans in ROUTES.items() if Channel.PAGERDUTY in chans}
    assert all(Channel.SLACK in ROUTES[k] for k in paging), "everything that pages also goes to Slack"
    assert {k: (a.event_action, a.severity) for k, a in PAGERDUTY_ACTIONS.items()} == {
        AlertKind.REVIEW_NEEDED: ("trigger", "warning"),
        AlertKind.ROLLOUT_FAILED: ("trigger", "critical"),
        AlertKind.ROLLBACK_STARTED: ("trigger", "critical"),
        AlertKind.ROLLBACK_COMPLETED: ("trigger", "critical"),
        AlertKind.ROLLBACK_FAILED: ("trigger", "critical"),
        AlertKind.RECOVERED: ("resolve", None),
        # A denied review closes the review incident; a crashed analysis asks a human to look.
        AlertKind.REVIEW_CLOSED: ("resolve", None),
        AlertKind.ANALYSIS_ERROR: ("trigger", "warning"),
    }
    assert set(ROUTES) == set(AlertKind)


# --- dedup ---------------------------------------------------------------------------------------


async def test_the_same_rollout_kind_and_rule_is_sent_once() -> None:
    clock = FakeClock()
    slack = Scripted("slack", Channel.SLACK, clock)
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([slack], clock=clock, dedup_window=600, metrics=PrometheusMetrics(registry))
    await pipeline.start()
    try:
        assert pipeline.submit(make_alert(AlertKind.NOTIFY_MATCHED, rule="minor-errors"))
        assert not pipeline.submit(make_alert(AlertKind.NOTIFY_MATCHED, rule="minor-errors", title="again"))
        assert pipeline.submit(make_alert(AlertKind.NOTIFY_MATCHED, rule="other-rule"))
        assert pipeline.submit(make_alert(AlertKind.NOTIFY_MATCHED, rule="minor-errors", revision=8,
                                          rollout_key="staging/backend/8"))
        await clock.advance(601)
        assert pipeline.submit(make_alert(AlertKind.NOTIFY_MATCHED, rule="minor-errors")), "window passed"
        await pipeline.wait_idle()
    finally:
        await pipeline.stop()
    assert len(slack.calls) == 4
    assert sample(registry, "rollguard_notifications_deduplicated_total", kind="notify_matched") == 1


def test_dedup_memory_is_bounded() -> None:
    dedup = Deduplicator(window=3600, capacity=3, clock=FakeClock())
    for key in "abcd":
        assert dedup.admit(key)
    assert len(dedup) == 3
    assert dedup.admit("a"), "the oldest key was forgotten to stay within capacity"
    assert not dedup.admit("d")


# --- retry -----------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_cap=8)
    rng = random.Random(7)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (9, 8)]:
        delays = [policy.delay(failures, retry_after=None, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 1, "no jitter"
    assert policy.delay(1, retry_after=30, rng=rng) == 30


async def test_retries_with_backoff_until_delivered_without_real_sleeps() -> None:
    clock = FakeClock()
    script = iter([SendResult.retry_later("HTTP 503")] * 3 + [SendResult.success()])
    slack = Scripted("slack", Channel.SLACK, clock, script)
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([slack], clock=clock, backoff_base=1, backoff_cap=60, max_attempts=6,
                                    metrics=PrometheusMetrics(registry), rng=random.Random(1))
    start = clock.now()
    real_start = time.monotonic()
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED))
        while len(slack.calls) < 4:
            await eventually(lambda: bool(clock._sleepers) or len(slack.calls) == 4, what="a backoff sleep")
            if clock._sleepers:
                await clock.advance(clock._sleepers[0][0] - clock.now())
        await pipeline.wait_idle()
    finally:
        await pipeline.stop()
    gaps = [b - a for (a, _), (b, _) in zip(slack.calls, slack.calls[1:], strict=False)]
    assert [0.5 <= gaps[0] <= 1, 1 <= gaps[1] <= 2, 2 <= gaps[2] <= 4] == [True] * 3, gaps
    assert slack.calls[0][0] == start
    assert time.monotonic() - real_start < 5, "backoff must not sleep in real time"
    assert sample(registry, "rollguard_notifications_retried_total", notifier="slack") == 3
    assert sample(registry, "rollguard_notifications_sent_total", notifier="slack") == 1


async def test_gives_up_after_max_attempts_and_on_permanent_errors() -> None:
    clock = FakeClock()
    flaky = Scripted("slack", Channel.SLACK, clock, iter([SendResult.retry_later("HTTP 500")] * 10))
    refused = Scripted("pagerduty", Channel.PAGERDUTY, clock, iter([SendResult.give_up("HTTP 400: bad key")] * 10))
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([flaky, refused], clock=clock, max_attempts=3, backoff_base=1, backoff_cap=1,
                                    metrics=PrometheusMetrics(registry))
    await pipeline.start()
    try:
        with capture_logs() as logs:
            pipeline.submit(make_alert(AlertKind.ROLLBACK_STARTED))
            for _ in range(3):
                await eventually(lambda: bool(clock._sleepers) or len(flaky.calls) == 3, what="progress")
                await clock.advance(1)
            await pipeline.wait_idle()
    finally:
        await pipeline.stop()
    assert (len(flaky.calls), len(refused.calls)) == (3, 1)
    assert sample(registry, "rollguard_notifications_failed_total", notifier="slack", reason="attempts") == 1
    assert sample(registry, "rollguard_notifications_failed_total", notifier="pagerduty", reason="rejected") == 1
    events = {e["event"] for e in logs}
    assert "notification failed; out of attempts" in events
    assert "notification rejected; not retrying" in events


async def test_the_deadline_stops_retries_that_would_start_too_late() -> None:
    clock = FakeClock()
    slack = Scripted("slack", Channel.SLACK, clock, iter([SendResult.retry_later("429", retry_after=120)] * 5))
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([slack], clock=clock, deadline_seconds=100, metrics=PrometheusMetrics(registry))
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED))
        await pipeline.wait_idle()
    finally:
        await pipeline.stop()
    assert len(slack.calls) == 1, "Retry-After 120 s lies beyond the 100 s deadline: no second attempt"
    assert sample(registry, "rollguard_notifications_failed_total", notifier="slack", reason="deadline") == 1


async def test_a_notifier_that_raises_is_a_failure_not_a_dead_lane() -> None:
    clock = FakeClock()

    class Broken(Scripted):
        async def send(self, alert: Alert) -> SendResult:
            await super().send(alert)
            raise RuntimeError("bug")

    broken = Broken("slack", Channel.SLACK, clock)
    pipeline = NotificationPipeline([broken], clock=clock)
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED))
        pipeline.submit(make_alert(AlertKind.ROLLOUT_COMPLETE))
        await pipeline.wait_idle()
    finally:
        await pipeline.stop()
    assert len(broken.calls) == 2, "the lane kept going after the first exception"


# --- never blocking -------------------------------------------------------------------------------


async def test_submit_returns_at_once_when_every_notifier_hangs_and_stop_cancels_cleanly() -> None:
    slack, pagerduty = Hanging(Channel.SLACK), Hanging(Channel.PAGERDUTY)
    pagerduty.name = "pagerduty-hanging"
    pipeline = NotificationPipeline([slack, pagerduty], clock=FakeClock(), send_timeout=3600, queue_size=5)
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLBACK_STARTED))
        await asyncio.wait_for(asyncio.gather(slack.started.wait(), pagerduty.started.wait()), 5)
        started = time.monotonic()
        for revision in range(100, 200):
            assert pipeline.submit(make_alert(AlertKind.ROLLBACK_STARTED, revision=revision,
                                              rollout_key=f"staging/backend/{revision}")) is True
        assert time.monotonic() - started < 0.5, "submit() must never wait for a notifier"
        assert pipeline.pending() == {"hanging": 5, "pagerduty-hanging": 5}, "bounded queues, oldest dropped"
        stop_started = time.monotonic()
        await pipeline.stop(drain_timeout=0.1)
    finally:
        await pipeline.stop(drain_timeout=0)  # idempotent; cleans up if an assertion above failed
    assert time.monotonic() - stop_started < 2
    assert pipeline.pending() == {"hanging": 0, "pagerduty-hanging": 0}
    assert not pipeline.submit(make_alert(AlertKind.ROLLBACK_FAILED)), "a stopped pipeline drops, never raises"


async def test_overflow_drops_the_oldest_with_a_warning_and_a_count() -> None:
    clock = FakeClock()
    slack = Scripted("slack", Channel.SLACK, clock)
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([slack], clock=clock, queue_size=2, metrics=PrometheusMetrics(registry))
    with capture_logs() as logs:
        for revision in (1, 2, 3):  # not started yet: everything waits in the queue
            pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED, revision=revision,
                                       rollout_key=f"staging/backend/{revision}"))
    await pipeline.start()
    await pipeline.wait_idle()
    await pipeline.stop()
    assert [a.revision for _, a in slack.calls] == [2, 3]
    assert sample(registry, "rollguard_notifications_dropped_total", notifier="slack", reason="overflow") == 1
    assert [e["dropped_rollout"] for e in logs if e["log_level"] == "warning"] == ["staging/backend/1"]
    assert slack.closed, "stop() closes the notifiers"


async def test_a_failing_notifier_never_delays_another() -> None:
    clock = FakeClock()
    slow = Scripted("pagerduty", Channel.PAGERDUTY, clock, iter([SendResult.retry_later("503")] * 100))
    slack = Scripted("slack", Channel.SLACK, clock)
    pipeline = NotificationPipeline([slow, slack], clock=clock, backoff_base=30, backoff_cap=60)
    await pipeline.start()
    try:
        for revision, kind in enumerate((AlertKind.ROLLOUT_FAILED, AlertKind.ROLLBACK_STARTED,
                                         AlertKind.ROLLBACK_COMPLETED), start=1):
            pipeline.submit(make_alert(kind, revision=revision,
                                       rollout_key=rollout_key_for("staging", "backend", revision)))
        await eventually(lambda: len(slack.calls) == 3, what="slack to get all three while pagerduty backs off")
        # Each rollout's page had its first attempt at once; none waits behind another rollout's backoff
        # (a rollout's own alerts keep their order: see the tests at the end).
        await eventually(lambda: len(slow.calls) == 3, what="pagerduty to try each page once")
        assert {t for t, _ in slow.calls} == {clock.now()}
    finally:
        await pipeline.stop(drain_timeout=0)


# --- fan-out with the real notifiers ---------------------------------------------------------------


async def test_fan_out_follows_the_matrix_end_to_end() -> None:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as slack, PagerDutyReceiver(routing_keys=[ROUTING_KEY]) as pd:
        built = build_notifiers(
            {"slack": {"channel": "#deploys", "baseUrl": slack.url}, "pagerduty": {"baseUrl": pd.url}},
            env={"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN, "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY},
            pagerduty_ssl=pd.client_ssl_context(),
        )
        pipeline = NotificationPipeline(built.notifiers, redactor=built.redactor)
        await pipeline.start()
        try:
            pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED))
            await eventually(lambda: len(slack.received) == 1, what="the Slack root")
            await pipeline.wait_idle()
            assert pd.received == [], "ROLLOUT_STARTED goes to Slack only"

            pipeline.submit(make_alert(AlertKind.ROLLBACK_STARTED))
            await eventually(lambda: len(pd.events) == 1, what="the PagerDuty trigger")
            await pipeline.wait_idle()
            assert pd.events[0]["payload"]["severity"] == "critical"
            assert len(slack.replies(slack.roots()[0])) == 1, "ROLLBACK_STARTED goes to Slack too"

            review = make_alert(AlertKind.REVIEW_NEEDED, namespace="prod", rollout_key="prod/backend/7")
            pipeline.submit(review)
            await eventually(lambda: len(pd.events) == 2, what="the review page")
            await pipeline.wait_idle()
        finally:
            await pipeline.stop()
        assert pd.events[1]["payload"]["severity"] == "warning"
        assert pd.events[1]["dedup_key"] == "rollguard/prod/backend/7"
        assert len(slack.roots()) == 2, "the review of another rollout opened its own thread"
        assert [r.errors for r in [*slack.received, *pd.received] if not r.accepted] == []


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"backoff_base": 0}, {"queue_size": 0}, {"backoff_cap": 0.5}])
def test_impossible_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        NotificationPipeline([], **bad)  # type: ignore[arg-type]


def test_notifier_names_must_be_unique() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="repeated: slack"):
        NotificationPipeline([Scripted("slack", Channel.SLACK, clock), Scripted("slack", Channel.SLACK, clock)])


async def test_a_bug_in_submit_is_logged_redacted_and_never_raised() -> None:
    clock = FakeClock()
    pipeline = NotificationPipeline([Scripted("slack", Channel.SLACK, clock)], clock=clock,
                                    redactor=Redactor(["hunter2-secret"]))

    class Exploding:
        """Not an Alert: what a caller bug could hand over; its attribute access raises."""

        @property
        def kind(self) -> AlertKind:
            raise RuntimeError("kind lookup leaked hunter2-secret")

    with capture_logs() as logs:
        assert pipeline.submit(Exploding()) is False  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == ["could not queue notification"]
    assert "hunter2-secret" not in repr(logs)
    assert "RuntimeError: kind lookup leaked [REDACTED]" in logs[0]["error"]
    await pipeline.stop()


# --- settled: when an announcement may be recorded as made ------------------------------------------


async def test_an_alert_is_settled_once_every_notifier_finished_with_it() -> None:
    clock = FakeClock()
    slack = Scripted("slack", Channel.SLACK, clock)
    pagerduty = Scripted("pagerduty", Channel.PAGERDUTY, clock, iter([SendResult.retry_later("503"),
                                                                       SendResult.success()]))
    pipeline = NotificationPipeline([slack, pagerduty], clock=clock, backoff_base=1.0, rng=random.Random(1))
    await pipeline.start()
    try:
        alert = make_alert(AlertKind.ROLLBACK_STARTED)
        assert pipeline.submit(alert)
        assert not await pipeline.settled(alert, timeout=0.2), "PagerDuty is still retrying"
        await clock.advance(5)
        assert await pipeline.settled(alert, timeout=2)
        assert len(pagerduty.calls) == 2
    finally:
        await pipeline.stop(drain_timeout=0)


async def test_a_notifier_that_hangs_keeps_the_alert_unsettled() -> None:
    """A process killed now must re-send the alert after its restart: it is not recorded as made."""
    hanging = Hanging(Channel.PAGERDUTY)
    pipeline = NotificationPipeline([hanging], send_timeout=30)
    await pipeline.start()
    try:
        alert = make_alert(AlertKind.ROLLBACK_STARTED)
        pipeline.submit(alert)
        await hanging.started.wait()
        assert not await pipeline.settled(alert, timeout=0.1)
    finally:
        await pipeline.stop(drain_timeout=0)


async def test_an_alert_that_was_never_queued_is_settled() -> None:
    pipeline = NotificationPipeline([])
    await pipeline.start()
    try:
        assert await pipeline.settled(make_alert(AlertKind.ROLLBACK_STARTED), timeout=0.1)
    finally:
        await pipeline.stop(drain_timeout=0)


async def test_a_repeat_suppressed_by_dedup_settles_with_the_alert_it_repeats() -> None:
    """A successor's outbox re-sends what this process may still be retrying: it must wait for the
    original, not count the suppressed repeat as delivered."""
    clock = FakeClock()
    pagerduty = Scripted("pagerduty", Channel.PAGERDUTY, clock, iter([SendResult.retry_later("503"),
                                                                       SendResult.success()]))
    pipeline = NotificationPipeline([pagerduty], clock=clock, backoff_base=1.0, rng=random.Random(1))
    await pipeline.start()
    try:
        original = make_alert(AlertKind.ROLLBACK_STARTED)
        assert pipeline.submit(original)
        repeat = make_alert(AlertKind.ROLLBACK_STARTED)
        assert repeat is not original
        assert repeat.identity == original.identity
        assert not pipeline.submit(repeat), "deduplicated"
        assert not await pipeline.settled(repeat, timeout=0.2), "the original is still being retried"
        await clock.advance(5)
        assert await pipeline.settled(repeat, timeout=2)
        assert len(pagerduty.calls) == 2
    finally:
        await pipeline.stop(drain_timeout=0)


async def test_alerts_cut_off_by_a_stop_are_never_settled() -> None:
    """Dropped at shutdown — waiting in the queue, or in the middle of an attempt — is not delivered and
    not given up on: the outbox must keep them for a successor."""
    hanging = Hanging(Channel.PAGERDUTY)
    pipeline = NotificationPipeline([hanging], send_timeout=30)
    await pipeline.start()
    in_flight = make_alert(AlertKind.ROLLBACK_STARTED)
    queued = make_alert(AlertKind.REVIEW_NEEDED)
    pipeline.submit(in_flight)
    pipeline.submit(queued)
    await hanging.started.wait()
    waits = [asyncio.create_task(pipeline.settled(a, timeout=5)) for a in (in_flight, queued)]
    await pipeline.stop(drain_timeout=0)
    assert [await w for w in waits] == [False, False]


async def test_by_default_a_slack_outage_of_two_minutes_is_ridden_out() -> None:
    """The defaults retry for about the whole deadline (5 minutes), not for the first half minute: an
    announcement given up on is delivered to nobody."""
    clock = FakeClock()
    slack = Scripted("slack", Channel.SLACK, clock, script=None)
    down_until = clock.now() + 120

    async def send(alert: Alert) -> SendResult:
        slack.calls.append((clock.now(), alert))
        return SendResult.retry_later("HTTP 503") if clock.now() < down_until else SendResult.success()

    slack.send = send  # type: ignore[method-assign]
    registry = CollectorRegistry()
    pipeline = NotificationPipeline([slack], clock=clock, metrics=PrometheusMetrics(registry), rng=random.Random(1))
    await pipeline.start()
    try:
        alert = make_alert(AlertKind.ROLLBACK_STARTED)
        pipeline.submit(alert)
        while not await pipeline.settled(alert, timeout=0.01):
            await eventually(lambda: bool(clock._sleepers), what="a backoff sleep")
            await clock.advance(clock._sleepers[0][0] - clock.now())
    finally:
        await pipeline.stop()
    assert sample(registry, "rollguard_notifications_sent_total", notifier="slack") == 1
    assert clock.now() >= down_until


async def test_an_alert_waiting_for_its_retry_does_not_hold_the_ones_behind_it() -> None:
    """Slack refusing the rollout's first message must not keep its rollback message waiting."""
    clock = FakeClock()
    t0 = clock.now()

    def answer(alert: Alert) -> SendResult:
        if alert.kind is AlertKind.ROLLOUT_STARTED and clock.now() < t0 + 100:
            return SendResult.retry_later("HTTP 503")
        return SendResult.success()

    slack = Scripted("slack", Channel.SLACK, clock, answer=answer)
    pipeline = NotificationPipeline([slack], clock=clock, rng=random.Random(1))
    await pipeline.start()
    try:
        started, rolled_back = make_alert(AlertKind.ROLLOUT_STARTED), make_alert(AlertKind.ROLLBACK_STARTED)
        pipeline.submit(started)
        pipeline.submit(rolled_back)
        assert await pipeline.settled(rolled_back, timeout=2), "the rollback message waited behind a retry"
        assert clock.now() == t0
        assert not await pipeline.settled(started, timeout=0.05)
        await _deliver_all(pipeline, clock, started)
    finally:
        await pipeline.stop()
    assert [a.kind for _, a in slack.calls].count(AlertKind.ROLLBACK_STARTED) == 1
    assert slack.calls[-1][1].kind is AlertKind.ROLLOUT_STARTED


def test_an_alert_no_notifier_is_routed_to_is_not_carried() -> None:
    """What nobody would be sent is not owed: the outbox skips it (no state writes for nothing)."""
    clock = FakeClock()
    pagerduty_only = NotificationPipeline([Scripted("pagerduty", Channel.PAGERDUTY, clock)], clock=clock)
    assert pagerduty_only.carries(make_alert(AlertKind.ROLLBACK_STARTED))
    assert not pagerduty_only.carries(make_alert(AlertKind.ROLLOUT_STARTED))
    assert not NotificationPipeline([], clock=clock).carries(make_alert(AlertKind.ROLLBACK_STARTED))


async def test_a_resolve_never_overtakes_the_trigger_it_resolves() -> None:
    """PagerDuty drops a resolve for an incident it does not have: if the trigger's retry came after,
    the page would stay open for a review that was closed long ago."""
    clock = FakeClock()
    failures = iter([SendResult.retry_later("HTTP 500")])
    pagerduty = Scripted("pagerduty", Channel.PAGERDUTY, clock, answer=lambda _: next(failures, SendResult.success()))
    pipeline = NotificationPipeline([pagerduty], clock=clock, rng=random.Random(1))
    await pipeline.start()
    try:
        review, closed = make_alert(AlertKind.REVIEW_NEEDED), make_alert(AlertKind.REVIEW_CLOSED)
        pipeline.submit(review)
        pipeline.submit(closed)
        await _deliver_all(pipeline, clock, review, closed)
    finally:
        await pipeline.stop()
    assert [a.kind for _, a in pagerduty.calls] == [
        AlertKind.REVIEW_NEEDED, AlertKind.REVIEW_NEEDED, AlertKind.REVIEW_CLOSED]


async def test_a_rollouts_alerts_keep_their_order_through_retries_and_others_go_ahead() -> None:
    """The incident and the Slack thread read in the order things happened: "rollback completed"
    waits for "rolling back" to get through; another rollout's alert is not held by either."""
    clock = FakeClock()
    t0 = clock.now()

    def answer(alert: Alert) -> SendResult:
        if alert.kind is AlertKind.ROLLBACK_STARTED and clock.now() < t0 + 2:
            return SendResult.retry_later("HTTP 500")
        return SendResult.success()

    pagerduty = Scripted("pagerduty", Channel.PAGERDUTY, clock, answer=answer)
    pipeline = NotificationPipeline([pagerduty], clock=clock, rng=random.Random(1))
    await pipeline.start()
    try:
        started, completed = make_alert(AlertKind.ROLLBACK_STARTED), make_alert(AlertKind.ROLLBACK_COMPLETED)
        other = make_alert(AlertKind.ROLLBACK_COMPLETED, deployment="frontend",
                           rollout_key=rollout_key_for("staging", "frontend", 3))
        pipeline.submit(started)
        pipeline.submit(completed)
        pipeline.submit(other)
        assert await pipeline.settled(other, timeout=2), "another rollout's alert waited behind a retry"
        assert clock.now() == t0
        assert pipeline.pending() == {"pagerduty": 1}, "the held alert is not counted as waiting"
        await _deliver_all(pipeline, clock, started, completed)
    finally:
        await pipeline.stop()
    ours = [a.kind for _, a in pagerduty.calls if a.rollout_key == started.rollout_key]
    assert ours[-2:] == [AlertKind.ROLLBACK_STARTED, AlertKind.ROLLBACK_COMPLETED], ours
    assert ours.count(AlertKind.ROLLBACK_COMPLETED) == 1, ours


async def test_alerts_held_behind_a_retry_are_owed_to_a_successor_at_shutdown() -> None:
    """A stop while an alert waits for its retry abandons the alerts held behind it too: the
    outbox keeps them, never counts them as settled."""
    clock = FakeClock()
    pagerduty = Scripted("pagerduty", Channel.PAGERDUTY, clock,
                         script=iter([SendResult.retry_later("HTTP 500")] * 20))
    pipeline = NotificationPipeline([pagerduty], clock=clock, rng=random.Random(1))
    await pipeline.start()
    started, completed = make_alert(AlertKind.ROLLBACK_STARTED), make_alert(AlertKind.ROLLBACK_COMPLETED)
    pipeline.submit(started)
    pipeline.submit(completed)
    await eventually(lambda: bool(clock._sleepers), what="the first alert's backoff")
    await pipeline.stop(drain_timeout=0.05)
    assert not await pipeline.settled(started, timeout=0.05)
    assert not await pipeline.settled(completed, timeout=0.05)
    assert [a.kind for _, a in pagerduty.calls] == [AlertKind.ROLLBACK_STARTED]
