"""Guarded root tasks: the daemon is a few named, endless tasks; if one dies, all stop.

`run_guarded(tasks, grace=...)` runs named coroutines until one of them ends (normally or with an
exception) or `stop` is set; then it cancels the rest, waits up to `grace` seconds for them to
unwind, and reports what ended first. Nothing here swallows an exception: a crashed task is logged
with its name and re-raised as `RootTaskFailed` so the process exits non-zero and Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

log = structlog.get_logger("rollguard.aio")


class RootTaskFailed(RuntimeError):
    """A root task raised; the daemon stopped every other task."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"root task {name!r} failed: {type(error).__name__}: {error}")
        self.name = name
        self.error = error


async def run_guarded(
    coros: Mapping[str, Coroutine[Any, Any, None]],
    *,
    stop: asyncio.Event | None = None,
    grace: float = 10.0,
) -> None:
    """Run the named coroutines as root tasks until one ends or `stop` is set, then stop them all."""
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in coros.items()}
    stopper: asyncio.Task[bool] | None = asyncio.create_task(stop.wait(), name="stop-request") if stop else None
    waiting: set[asyncio.Task[Any]] = set(tasks)
    if stopper is not None:
        waiting.add(stopper)
    failure: RootTaskFailed | None = None
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopper:
                log.info("stop requested")
                continue
            name = tasks[task]
            if task.cancelled():
                log.warning("root task cancelled", task=name)
            elif (error := task.exception()) is not None:
                log.error("root task failed", task=name, error=f"{type(error).__name__}: {error}")
                failure = failure or RootTaskFailed(name, error)
            else:
                log.warning("root task ended", task=name)
    finally:
        pending = [t for t in waiting if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            if still:
                log.error("root tasks did not stop within grace period", tasks=sorted(t.get_name() for t in still))
        for task in pending:
            if task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.result()
    if failure is not None:
        raise failure
