"""Waiting for something another task does: the one `eventually` every test uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition",
                     interval: float = 0.2, check: Callable[[], None] | None = None) -> float:
    """Poll `predicate()` every `interval` real seconds until it holds; returns the seconds it took.

    Fails naming `what` after `timeout` seconds; `check()` runs at every poll and may raise to stop
    early (a daemon that died while the test waited for it)."""
    started = time.monotonic()
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started
