"""Shared test fixtures. Every test fails if it leaves asyncio tasks running behind it.

`store`, `server` and `session`: a simulated object store on a fake clock, the simulated workload
(every pod's HTTP/WebSocket endpoints and the in-cluster service proxy) serving it on loopback, and a
plain aiohttp client — what the provider and service tests share (a module may define its own).
`chaos_slice`: the fault schedules both chaos test modules assert on, played once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from daemon.clock import FakeClock
from sim.services import WorkloadServer
from sim.store import Store
from tests.chaos.report import Summary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked `long` first (a stable sort: the order within each stays): pytest-xdist hands out
    whole modules in this order, so the longest start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def store() -> Store:
    return Store(FakeClock(start=1_764_151_200.0))


@pytest.fixture
async def server(store: Store) -> AsyncIterator[WorkloadServer]:
    async with WorkloadServer(store, store.clock) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as plain:
        yield plain


@pytest.fixture(scope="session")
def chaos_slice() -> dict[str, Summary]:
    """The fault schedules of `make test` (`tests/chaos/slice.py`), played once per session."""
    from tests.chaos.slice import play

    return play()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running: every task must be awaited or cancelled and awaited."""
    before = set(asyncio.all_tasks())
    yield
    # Give tasks cancelled during teardown one chance to finish unwinding.
    for _ in range(3):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail("test left asyncio tasks running: " + ", ".join(repr(t.get_name()) for t in leaked))
