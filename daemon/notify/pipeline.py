"""The notification pipeline: dedup → fan-out → one lane per notifier (queue + retry).

    submit(alert)  ─▶ dedup ─▶ fan-out ─┬─▶ lane "slack":     bounded queue ─▶ retry loop ─▶ SlackNotifier
    (sync, never      (rollout,  (ROUTES) ├─▶ lane "pagerduty": bounded queue ─▶ retry loop ─▶ PagerDutyNotifier
     blocks)           kind, rule         └─▶ lane "console":   bounded queue ─▶ retry loop ─▶ ConsoleNotifier
                       once per window)

Promises to the caller (the actions layer, in the middle of a rollback):
  * `submit()` is synchronous and returns at once: it never awaits, never raises. A full lane drops
    its *oldest* alert (logged, counted) — the newest is the one that describes the present.
  * Each notifier has its own queue and task, so a slow or failing notifier never delays another; and
    an alert waiting for its retry waits aside, so it never delays the alerts behind it.
  * Retries use exponential backoff with jitter, honour Retry-After, and stop at `max_attempts` or
    when the next attempt would start after the alert's deadline (`deadline_seconds` after submit).
  * Every wait goes through the injected `Clock`, so tests drive backoff with `FakeClock.advance()`.
    The per-attempt `send_timeout` is real time on purpose: it bounds real network I/O.

The pipeline owns its notifiers: `stop()` drains (up to `drain_timeout`), cancels the lanes and
closes every notifier. Call `submit()` from the event loop's thread (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from daemon.clock import Clock, SystemClock
from daemon.notify.dedup import Deduplicator
from daemon.notify.delivery import MetricsSink, PrometheusMetrics, RetryPolicy
from daemon.notify.model import Alert, Notifier, SendResult, is_routed, transport_failure
from daemon.notify.secrets import Redactor

log = structlog.get_logger("rollguard.notify")


class Router(Protocol):
    """Chooses an alert's notifiers (`daemon.notify.routing.NotifyRouter`); without one, the matrix does."""

    def notifiers_for(self, alert: Alert) -> Sequence[Notifier]:
        """The notifiers `alert` goes to; a notifier not seen before gets its own lane."""
        ...

    async def aclose(self) -> None:
        """Close what the router built; called once by the pipeline's `stop()`."""
        ...


@dataclass(eq=False)
class _Pending:
    alert: Alert
    submitted_at: float
    """Clock time of `submit()`: the deadline counts from here."""
    lanes: int = 0
    """Lanes that have not finished with it yet (delivered, given up or dropped)."""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every lane finished with it."""
    abandoned: bool = False
    """A lane dropped it at shutdown: not delivered, not given up on — a successor must send it."""

    def finished(self, *, abandoned: bool = False) -> None:
        self.abandoned = self.abandoned or abandoned
        self.lanes -= 1
        if self.lanes <= 0:
            self.settled.set()


class _Lane:
    """One notifier's bounded queue and the task that delivers from it, retrying per the policy.

    A failed attempt does not hold the lane: the alert waits for its retry aside (`waiting`) while the
    alerts behind it go out, so a page is never stuck behind a minor message that Slack keeps refusing."""

    def __init__(self, notifier: Notifier, *, owner: NotificationPipeline, capacity: int) -> None:
        self.notifier = notifier
        self._owner = owner
        self._capacity = capacity
        self.queue: deque[_Pending] = deque()
        self.waiting: dict[asyncio.Task[None], _Pending] = {}
        """Alerts between two attempts, by the task that brings each back when its backoff is over."""
        self._failures: dict[int, int] = {}
        self._wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None

    def offer(self, pending: _Pending) -> None:
        name = self.notifier.name
        if len(self.queue) >= self._capacity:
            dropped = self.queue.popleft()
            self._failures.pop(id(dropped), None)
            dropped.finished()
            self._owner.metrics.dropped(name, "overflow")
            log.warning("notification queue full; dropped the oldest alert", notifier=name,
                        capacity=self._capacity, dropped_kind=dropped.alert.kind.value,
                        dropped_rollout=dropped.alert.rollout_key)
        self.queue.append(pending)
        self.idle.clear()
        self._wakeup.set()
        self._owner.metrics.queued(name, len(self.queue))

    async def run(self) -> None:
        while True:
            while not self.queue:
                if not self.waiting:
                    self.idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            self.idle.clear()
            pending = self.queue.popleft()
            self._owner.metrics.queued(self.notifier.name, len(self.queue))
            try:
                done = await self._deliver(pending)
            except asyncio.CancelledError:
                pending.finished(abandoned=True)  # stopped mid-delivery: owed to a successor
                raise
            except Exception as exc:  # the lane must outlive any bug in one delivery; the error is logged
                log.error("notification lane error", notifier=self.notifier.name,
                          **self._owner.redacted_exception(exc))
                done = True
            if done:
                self._failures.pop(id(pending), None)
                pending.finished()

    def abandon_waiting(self) -> list[_Pending]:
        """Stop every retry wait (shutdown); the alerts they held."""
        held = list(self.waiting.values())
        for task in self.waiting:
            task.cancel()
        self.waiting.clear()
        return held

    def _retry_after(self, pending: _Pending, delay: float) -> None:
        async def back() -> None:
            await self._owner.clock.sleep(delay)
            self.waiting.pop(task, None)
            self.queue.appendleft(pending)  # its turn came long ago: ahead of the alerts that came since
            self._wakeup.set()

        task = asyncio.create_task(back(), name=f"notify-retry:{self.notifier.name}")
        self.waiting[task] = pending

    async def _deliver(self, pending: _Pending) -> bool:
        """One attempt; True when the lane is done with the alert, False when a retry is scheduled."""
        owner, alert, name = self._owner, pending.alert, self.notifier.name
        policy = owner.policy
        deadline = pending.submitted_at + policy.deadline_seconds
        bound = log.bind(notifier=name, kind=alert.kind.value, rollout=alert.rollout_key, rule=alert.rule)
        failures = self._failures.get(id(pending), 0)
        result = await self._attempt(alert)
        if result.ok:
            owner.metrics.sent(name)
            bound.debug("notification sent", attempts=failures + 1)
            return True
        failures += 1
        error = owner.redactor.redact(result.error or "unknown error")
        if not result.retry:
            owner.metrics.failed(name, "rejected")
            bound.warning("notification rejected; not retrying", error=error, attempts=failures)
            return True
        if failures >= policy.max_attempts:
            owner.metrics.failed(name, "attempts")
            bound.warning("notification failed; out of attempts", error=error, attempts=failures)
            return True
        delay = policy.delay(failures, retry_after=result.retry_after, rng=owner.rng)
        if owner.clock.now() + delay > deadline:
            owner.metrics.failed(name, "deadline")
            bound.warning("notification failed; next retry would miss its deadline", error=error,
                          attempts=failures, retry_in=round(delay, 3), deadline_seconds=policy.deadline_seconds)
            return True
        owner.metrics.retried(name)
        bound.info("notification failed; retrying", error=error, attempt=failures, retry_in=round(delay, 3),
                   retry_after=result.retry_after)
        self._failures[id(pending)] = failures
        self._retry_after(pending, delay)
        return False

    async def _attempt(self, alert: Alert) -> SendResult:
        owner = self._owner
        try:
            async with asyncio.timeout(owner.send_timeout):
                return await self.notifier.send(alert)
        except TimeoutError:
            return transport_failure(f"{self.notifier.name}: no answer within {owner.send_timeout:g}s")
        except Exception as exc:  # a notifier bug is reported as a failure, never raised into the lane
            return SendResult.give_up(owner.redactor.describe(exc))


class NotificationPipeline:
    """Dedup, fan-out and per-notifier retrying delivery. See the module docstring."""

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        clock: Clock | None = None,
        max_attempts: int = 12,
        deadline_seconds: float = 300.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        send_timeout: float = 30.0,
        queue_size: int = 1000,
        dedup_window: float = 3600.0,
        dedup_capacity: int = 10_000,
        metrics: MetricsSink | None = None,
        redactor: Redactor | None = None,
        rng: random.Random | None = None,
        router: Router | None = None,
    ) -> None:
        """
        `send_timeout`: real seconds one attempt may take; `queue_size`: alerts per notifier before
        the oldest is dropped; `dedup_window`: seconds in which the same (rollout, kind, rule) is
        sent once; `dedup_capacity`: keys remembered; `metrics`: a `PrometheusMetrics` (default: one
        on a private registry); `redactor`: scrubs errors before they are logged; `rng`: jitter;
        `router`: picks each alert's notifiers (per-policy targets get lanes as they are first used);
        None: every notifier in `notifiers` that the matrix routes the alert to.
        """
        names = [n.name for n in notifiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"notifier names must be unique; repeated: {', '.join(duplicates)}")
        if queue_size < 1 or send_timeout <= 0:
            raise ValueError("queue_size must be >= 1 and send_timeout > 0")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.policy = RetryPolicy(max_attempts=max_attempts, deadline_seconds=deadline_seconds,
                                  backoff_base=backoff_base, backoff_cap=backoff_cap)
        self.send_timeout = send_timeout
        self.metrics: MetricsSink = metrics if metrics is not None else PrometheusMetrics()
        self.redactor = redactor if redactor is not None else Redactor()
        self.rng = rng if rng is not None else random.Random()
        self._dedup = Deduplicator(window=dedup_window, capacity=dedup_capacity, clock=self.clock)
        self._queue_size = queue_size
        self._router = router
        self._lanes: dict[str, _Lane] = {n.name: _Lane(n, owner=self, capacity=queue_size) for n in notifiers}
        self._started = False
        self._stopped = False
        self._lane_died: asyncio.Future[None] | None = None
        self._inflight: dict[tuple[object, ...], _Pending] = {}
        """Alerts not yet settled, by identity: a repeat suppressed by dedup settles with its original."""

    @property
    def notifiers(self) -> tuple[Notifier, ...]:
        return tuple(lane.notifier for lane in self._lanes.values())

    def pending(self) -> dict[str, int]:
        """Alerts waiting per notifier (not counting one being delivered)."""
        return {lane.notifier.name: len(lane.queue) for lane in self._lanes.values()}

    def submit(self, alert: Alert) -> bool:
        """Queue `alert` for every routed notifier; True if queued, False if deduplicated or stopped.

        Synchronous and non-blocking by design: callers are in the middle of a rollback.
        """
        try:
            return self._submit(alert)
        except Exception as exc:  # a notification problem must never propagate into a rollback
            # Touch nothing on `alert` here: whatever failed above may fail again.
            log.error("could not queue notification", alert_type=type(alert).__name__,
                      **self.redacted_exception(exc))
            return False

    def redacted_exception(self, exc: BaseException) -> dict[str, str]:
        """Log fields for an unexpected exception, scrubbed: the process's log chain may not redact."""
        return {
            "error": self.redactor.describe(exc),
            "traceback": self.redactor.redact("".join(traceback.format_exception(exc))),
        }

    def carries(self, alert: Alert) -> bool:
        """Whether any notifier would be sent `alert` (False: no notifier is routed to it)."""
        try:
            return bool(self._lanes_for(alert))
        except Exception:  # a routing problem shows at submit(); here, err on the side of owing it
            return True

    def _lanes_for(self, alert: Alert) -> list[_Lane]:
        if self._router is None:
            return [lane for lane in self._lanes.values() if is_routed(alert.kind, lane.notifier.channel)]
        return [self._lane_for(n) for n in self._router.notifiers_for(alert)]

    def _submit(self, alert: Alert) -> bool:
        lanes = self._lanes_for(alert)
        if self._stopped:
            for lane in lanes:
                self.metrics.dropped(lane.notifier.name, "stopped")
            log.warning("notification submitted after stop; dropped", kind=alert.kind.value,
                        rollout=alert.rollout_key)
            return False
        if not self._dedup.admit(alert.identity):
            self.metrics.deduplicated(alert.kind.value)
            log.debug("duplicate notification suppressed", kind=alert.kind.value, rollout=alert.rollout_key,
                      rule=alert.rule)
            return False
        pending = _Pending(alert, self.clock.now(), lanes=len(lanes))
        if not lanes:
            pending.settled.set()
        self._inflight[alert.identity] = pending
        while len(self._inflight) > self._queue_size:
            self._inflight.pop(next(iter(self._inflight)))
        for lane in lanes:
            lane.offer(pending)
        return True

    async def settled(self, alert: Alert, *, timeout: float) -> bool:
        """Whether every notifier finished with `alert` — delivered it, or gave up on it and counted
        that — within `timeout` real seconds. An alert suppressed as a repeat settles with the one it
        repeats; one that is not in flight any more (or never was) has nothing left to wait for: True.
        False for an alert dropped at shutdown: it was neither delivered nor given up on. Callers keep
        an announcement in the durable outbox until it settles, so a successor re-sends it."""
        pending = self._inflight.get(alert.identity)
        if pending is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await pending.settled.wait()
        except TimeoutError:
            return False
        if self._inflight.get(alert.identity) is pending and not pending.abandoned:
            del self._inflight[alert.identity]
        return not pending.abandoned

    def _lane_for(self, notifier: Notifier) -> _Lane:
        lane = self._lanes.get(notifier.name)
        if lane is None:
            lane = self._lanes[notifier.name] = _Lane(notifier, owner=self, capacity=self._queue_size)
            if self._started and not self._stopped:
                lane.task = self._start_lane(lane)
        elif lane.notifier is not notifier:
            raise ValueError(f"two notifiers are named {notifier.name!r}; names must be unique")
        return lane

    async def start(self) -> None:
        """Start one delivery task per notifier. Alerts submitted before start are kept and sent."""
        if self._started:
            raise RuntimeError("NotificationPipeline.start() called twice")
        if self._stopped:
            raise RuntimeError("a stopped NotificationPipeline cannot be restarted")
        self._started = True
        for lane in self._lanes.values():
            lane.task = self._start_lane(lane)

    def _start_lane(self, lane: _Lane) -> asyncio.Task[None]:
        task = asyncio.create_task(lane.run(), name=f"notify:{lane.notifier.name}")
        task.add_done_callback(self._lane_ended)
        return task

    def _lane_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopped or task.cancelled() or self._lane_died is None or self._lane_died.done():
            return
        error = task.exception() or RuntimeError(f"notification lane {task.get_name()} ended")
        self._lane_died.set_exception(error)

    async def run(self, *, drain_timeout: float = 5.0) -> None:
        """Run as a guarded root task: start the lanes, return never; a lane that dies raises here
        (so the daemon restarts instead of going silent); on cancellation drain and stop."""
        self._lane_died = asyncio.get_running_loop().create_future()
        await self.start()
        try:
            await self._lane_died
        finally:
            await asyncio.shield(self.stop(drain_timeout=drain_timeout))

    async def wait_idle(self) -> None:
        """Return once every queue is empty and no delivery (or retry wait) is in progress.

        Only meaningful after `start()`: before it, queued alerts wait and so does this.
        """
        while not all(lane.idle.is_set() and not lane.queue and not lane.waiting for lane in self._lanes.values()):
            await asyncio.gather(*(lane.idle.wait() for lane in list(self._lanes.values())))

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, let queued alerts go out for up to `drain_timeout` real seconds, then cancel
        the lanes and close the notifiers. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._started and drain_timeout > 0:
            try:
                async with asyncio.timeout(drain_timeout):
                    await self.wait_idle()
            except TimeoutError:
                log.warning("notifications still pending at shutdown; dropping them", pending=self.pending(),
                            drain_timeout=drain_timeout)
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            for dropped in [*lane.queue, *lane.abandon_waiting()]:
                dropped.finished(abandoned=True)
                self.metrics.dropped(lane.notifier.name, "shutdown")
            lane.queue.clear()
            lane.idle.set()
            try:
                async with asyncio.timeout(5.0):
                    await lane.notifier.aclose()
            except Exception as exc:  # closing is best effort; one failure must not skip the others
                log.warning("could not close notifier", notifier=lane.notifier.name,
                            error=self.redactor.describe(exc))
        if self._router is not None:
            try:
                async with asyncio.timeout(5.0):
                    await self._router.aclose()
            except Exception as exc:  # best effort, as above
                log.warning("could not close the router's notifiers", error=self.redactor.describe(exc))
