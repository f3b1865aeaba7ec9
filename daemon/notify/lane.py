"""One notifier's lane: a bounded queue, the task that delivers from it, and its retries.

A failed attempt does not hold the lane: the alert waits for its retry aside while the alerts behind
it go out, so a page is never stuck behind a minor message that Slack keeps refusing. What it does
hold is the rest of *its own rollout*: an alert never overtakes an earlier one about the same rollout
that is waiting for a retry, because both PagerDuty and a Slack thread read in arrival order — a
resolve that arrives before its trigger is dropped by PagerDuty, and the late trigger then leaves a
page open that nobody will close. The one exception is `may_overtake`: a page may go ahead of a
Slack-only message, so "rolling back" is not kept waiting behind "rollout started".
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from daemon.clock import Clock
from daemon.notify.delivery import MetricsSink, RetryPolicy
from daemon.notify.model import PAGERDUTY_ACTIONS, Alert, Notifier, SendResult, transport_failure
from daemon.notify.secrets import Redactor

log = structlog.get_logger("rollguard.notify")


class LaneOwner(Protocol):
    """What a lane uses of its pipeline: the clock, the retry policy and where it reports."""

    clock: Clock
    policy: RetryPolicy
    send_timeout: float
    metrics: MetricsSink
    redactor: Redactor
    rng: random.Random

    def redacted_exception(self, exc: BaseException) -> dict[str, str]: ...


@dataclass(eq=False)
class Pending:
    """One submitted alert, shared by every lane it was fanned out to."""

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


def may_overtake(later: Alert, earlier: Alert) -> bool:
    """Whether `later` may be delivered while `earlier`, about the same rollout, waits for a retry:
    only a page (a PagerDuty trigger) ahead of a message that does not page."""
    action = PAGERDUTY_ACTIONS.get(later.kind)
    return action is not None and action.event_action == "trigger" and earlier.kind not in PAGERDUTY_ACTIONS


class Lane:
    """One notifier's bounded queue and the task that delivers from it, retrying per the policy."""

    def __init__(self, notifier: Notifier, *, owner: LaneOwner, capacity: int) -> None:
        self.notifier = notifier
        self._owner = owner
        self._capacity = capacity
        self.queue: deque[Pending] = deque()
        self.waiting: dict[asyncio.Task[None], Pending] = {}
        """Alerts between two attempts, by the task that brings each back when its backoff is over."""
        self._retrying: dict[str, list[Pending]] = {}
        """Per rollout key, its alerts between two attempts (the ones later alerts may not overtake)."""
        self._held: dict[str, list[Pending]] = {}
        """Per rollout key, alerts held until its retrying ones are done with, in arrival order."""
        self._held_count = 0
        """Alerts in `_held`, kept as a count: the depth is read on every delivery."""
        self._failures: dict[int, int] = {}
        self._wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None

    def depth(self) -> int:
        """Alerts waiting for their first attempt: queued, or held behind their rollout's retry."""
        return len(self.queue) + self._held_count

    def offer(self, pending: Pending) -> None:
        name = self.notifier.name
        if len(self.queue) >= self._capacity:
            dropped = self.queue.popleft()
            self._failures.pop(id(dropped), None)
            self._release(dropped)
            dropped.finished()
            self._owner.metrics.dropped(name, "overflow")
            log.warning("notification queue full; dropped the oldest alert", notifier=name,
                        capacity=self._capacity, dropped_kind=dropped.alert.kind.value,
                        dropped_rollout=dropped.alert.rollout_key)
        self.queue.append(pending)
        self.idle.clear()
        self._wakeup.set()
        self._owner.metrics.queued(name, self.depth())

    async def run(self) -> None:
        while True:
            while not self.queue:
                if not self.waiting:
                    self.idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            self.idle.clear()
            pending = self.queue.popleft()
            if self._hold(pending):
                continue
            self._owner.metrics.queued(self.notifier.name, self.depth())
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
                self._release(pending)
                pending.finished()

    def _hold(self, pending: Pending) -> bool:
        """Set `pending` aside if an earlier alert of its rollout is waiting for a retry it may not overtake."""
        key = pending.alert.rollout_key
        retrying = self._retrying.get(key)
        if not retrying or pending in retrying or all(may_overtake(pending.alert, r.alert) for r in retrying):
            return False
        self._held.setdefault(key, []).append(pending)
        self._held_count += 1
        return True

    def _release(self, pending: Pending) -> None:
        """`pending` is done with: the alerts its rollout held go back to the front of the queue, in order."""
        key = pending.alert.rollout_key
        retrying = self._retrying.get(key)
        if not retrying or pending not in retrying:
            return
        retrying.remove(pending)
        if not retrying:
            del self._retrying[key]
        held = self._held.pop(key, [])
        self._held_count -= len(held)
        self.queue.extendleft(reversed(held))  # re-checked against what still retries as each comes up

    def abandon_waiting(self) -> list[Pending]:
        """Stop every retry wait (shutdown); the alerts they held and the ones held behind them."""
        held = list(self.waiting.values())
        for task in self.waiting:
            task.cancel()
        self.waiting.clear()
        self._retrying.clear()
        for behind in self._held.values():
            held.extend(behind)
        self._held.clear()
        self._held_count = 0
        return held

    def _retry_after(self, pending: Pending, delay: float) -> None:
        async def back() -> None:
            await self._owner.clock.sleep(delay)
            self.waiting.pop(task, None)
            self.queue.appendleft(pending)  # its turn came long ago: ahead of the alerts that came since
            self._wakeup.set()

        task = asyncio.create_task(back(), name=f"notify-retry:{self.notifier.name}")
        self.waiting[task] = pending
        retrying = self._retrying.setdefault(pending.alert.rollout_key, [])
        if pending not in retrying:
            retrying.append(pending)

    async def _deliver(self, pending: Pending) -> bool:
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
