"""Guarded root tasks: one dying stops the rest; a stop request stops all; nothing is left running."""

from __future__ import annotations

import asyncio

import pytest

from daemon.aio import RootTaskFailed, run_guarded


async def forever(stopped: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        stopped.append(name)


async def test_a_crashing_root_task_stops_the_others_and_is_reported() -> None:
    stopped: list[str] = []

    async def crash() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(RootTaskFailed) as err:
        await run_guarded({"watcher": forever(stopped, "watcher"), "http": forever(stopped, "http"),
                           "supervisor": crash()}, grace=1)
    assert str(err.value) == "root task 'supervisor' failed: ValueError: boom"
    assert sorted(stopped) == ["http", "watcher"]


async def test_stop_request_cancels_every_task() -> None:
    stopped: list[str] = []
    stop = asyncio.Event()

    async def request_stop() -> None:
        await asyncio.sleep(0.01)
        stop.set()
        await asyncio.Event().wait()

    await run_guarded({"a": forever(stopped, "a"), "b": forever(stopped, "b"), "stopper": request_stop()},
                      stop=stop, grace=1)
    assert sorted(stopped) == ["a", "b"]


async def test_a_task_that_ends_normally_also_stops_the_daemon() -> None:
    stopped: list[str] = []

    async def done() -> None:
        return None

    await run_guarded({"a": forever(stopped, "a"), "done": done()}, grace=1)
    assert stopped == ["a"]
