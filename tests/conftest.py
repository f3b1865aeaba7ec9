"""Shared test fixtures. Every test fails if it leaves asyncio tasks running behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


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
