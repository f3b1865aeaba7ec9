"""Coalescing: one fetch per key at a time, shared by every concurrent caller, reused for a while.

`daemon.signals.promapi` runs its instant queries through a `QueryCoalescer` keyed by `(query, time)`;
see its docstring for why identical queries of one tick share a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Flight(Generic[V]):
    task: asyncio.Future[V]
    """The fetch's task, or a future someone else resolves (`run_submitted`)."""
    owned: bool = True
    """The task is the coalescer's own: cancelled when its last caller is."""
    waiters: int = 0


@dataclass
class QueryCoalescer(Generic[K, V]):
    """Runs one fetch per key at a time, shared by every concurrent caller; reuses answers for `reuse_for` s.

    The fetch runs in a task of its own, so a caller that is cancelled does not cancel it for the
    others; when the last waiting caller is cancelled the fetch is cancelled too (nobody wants it).
    Exceptions reach every caller that was waiting and are never reused.
    """

    reuse_for: float = 0.0
    """Seconds (monotonic) a successful answer is handed out again without a new fetch; 0: never."""
    name: str = "coalesced-query"
    """Name of the fetch tasks (for task dumps and the leak check of the tests)."""
    _flights: dict[K, _Flight[V]] = field(default_factory=dict, init=False, repr=False)
    _answers: dict[K, tuple[float, V]] = field(default_factory=dict, init=False, repr=False)
    _next_prune: float = field(default=0.0, init=False, repr=False)

    @property
    def in_flight(self) -> int:
        """Fetches running now."""
        return len(self._flights)

    async def run(self, key: K, fetch: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The answer for `key`: a reused one, the one being fetched, or a new fetch of `fetch()`."""
        loop = asyncio.get_running_loop()
        answer = self._reusable(key, loop.time())
        if answer is not None:
            return answer[1]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, _Flight(loop.create_task(fetch(), name=self.name)))
        return await self._await(key, flight)

    async def run_submitted(self, key: K, submit: Callable[[], asyncio.Future[V]]) -> V:
        """As `run`, for a fetch that is already under way elsewhere once submitted: `submit()` returns
        the future its sender resolves (a batch member). No task of its own, so cheaper per key; when
        every caller is cancelled the future is left to its sender (the batch is sent anyway)."""
        answer = self._reusable(key, asyncio.get_running_loop().time())
        if answer is not None:
            return answer[1]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, _Flight(submit(), owned=False))
        return await self._await(key, flight)

    def _reusable(self, key: K, now: float) -> tuple[float, V] | None:
        self._prune(now)
        answer = self._answers.get(key)
        return answer if answer is not None and answer[0] > now else None

    def _start(self, key: K, flight: _Flight[V]) -> _Flight[V]:
        self._flights[key] = flight
        flight.task.add_done_callback(partial(self._landed, key, flight))
        return flight

    async def _await(self, key: K, flight: _Flight[V]) -> V:
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                if flight.owned:
                    flight.task.cancel()
                # Forget it now, not when it has unwound: a caller arriving meanwhile must start afresh
                # rather than await a cancelled task.
                if self._flights.get(key) is flight:
                    del self._flights[key]

    async def aclose(self) -> None:
        """Cancel every fetch still running and wait for them to end; forget reusable answers."""
        tasks = [flight.task for flight in self._flights.values() if flight.owned]
        self._flights.clear()
        self._answers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _landed(self, key: K, flight: _Flight[V], task: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if task.cancelled() or task.exception() is not None:  # exception(): marks it retrieved as well
            return
        if self.reuse_for > 0:
            self._answers[key] = (asyncio.get_running_loop().time() + self.reuse_for, task.result())

    def _prune(self, now: float) -> None:
        # At most once per reuse window, so the dict stays small without a scan on every call.
        if now < self._next_prune or not self._answers:
            return
        self._answers = {k: a for k, a in self._answers.items() if a[0] > now}
        self._next_prune = now + max(self.reuse_for, 0.1)
