"""The notification pipeline: dedup → fan-out → one lane per notifier (queue + retry).

    submit(alert)  ─▶ dedup ─▶ fan-out ─┬─▶ lane "slack":     bounded queue ─▶ retry loop ─▶ SlackNotifier
    (sync, never      (rollout,  (ROUTES) ├─▶ lane "pagerduty": bounded queue ─▶ retry loop ─▶ PagerDutyNotifier
     blocks)           kind, rule         └─▶ lane "console":   bounded queue ─▶ retry loop ─▶ ConsoleNotifier
                       once per window)

Promises to the caller (the actions layer, in the middle of a rollback):
  * `submit()` is synchronous and returns at once: it never awaits, never raises. A full lane drops
    its *oldest* alert (logged, counted) — the newest is the one that describes the present.
  * Each notifier has its own queue and task, so a slow or failing notifier never delays another; and
    an alert waiting for its retry waits aside, so it never delays the alerts of other rollouts. The
    later alerts of its own rollout wait for it (a page excepted), so they arrive in order
    (`daemon.notify.lane`).
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
from collections.abc import Sequence
from typing import Protocol

import structlog

from daemon.clock import Clock, SystemClock
from daemon.notify.dedup import Deduplicator
from daemon.notify.delivery import MetricsSink, PrometheusMetrics, RetryPolicy
from daemon.notify.lane import Lane, Pending
from daemon.notify.model import Alert, Notifier, is_routed
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
        self._lanes: dict[str, Lane] = {n.name: Lane(n, owner=self, capacity=queue_size) for n in notifiers}
        self._started = False
        self._stopped = False
        self._lane_died: asyncio.Future[None] | None = None
        self._inflight: dict[tuple[object, ...], Pending] = {}
        """Alerts not yet settled, by identity: a repeat suppressed by dedup settles with its original."""

    @property
    def notifiers(self) -> tuple[Notifier, ...]:
        return tuple(lane.notifier for lane in self._lanes.values())

    def pending(self) -> dict[str, int]:
        """Alerts waiting per notifier (not counting one being delivered)."""
        return {lane.notifier.name: lane.depth() for lane in self._lanes.values()}

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

    def _lanes_for(self, alert: Alert) -> list[Lane]:
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
        pending = Pending(alert, self.clock.now(), lanes=len(lanes))
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

    def _lane_for(self, notifier: Notifier) -> Lane:
        lane = self._lanes.get(notifier.name)
        if lane is None:
            lane = self._lanes[notifier.name] = Lane(notifier, owner=self, capacity=self._queue_size)
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

    def _start_lane(self, lane: Lane) -> asyncio.Task[None]:
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
