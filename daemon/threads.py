"""Slack threads kept across restarts: each rollout's root message (channel, ts) is remembered in an
annotation on its Deployment, `rollguard.io/slack-threads` (a small JSON map of the Deployment's most
recent rollout keys), so a restarted daemon or a new leader replies in the same thread.

Reads are synchronous (the Slack notifier asks in the middle of a delivery): an in-memory copy first,
then the Deployment as the informer cached it. Writes go through the one writer in the background;
a follower or a dry run writes nothing (the thread then lives as long as the process).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.threads")

THREADS_ANNOTATION = "rollguard.io/slack-threads"
KEPT_PER_DEPLOYMENT = 5
"""Rollouts of one Deployment whose thread is remembered (a rollback's alerts name the bad revision)."""

Lookup = Callable[[str, str], Mapping[str, Any] | None]
"""(namespace, name) → the Deployment as cached, or None."""


def _parse(raw: object) -> dict[str, tuple[str, str]]:
    """The annotation's map; anything not of rollguard's shape is ignored entirely."""
    if not isinstance(raw, str) or len(raw) > 4096:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    parsed: dict[str, tuple[str, str]] = {}
    for key, value in list(body.items())[:KEPT_PER_DEPLOYMENT]:
        if (isinstance(key, str) and isinstance(value, list) and len(value) == 2
                and all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)):
            parsed[key] = (value[0], value[1])
    return parsed


class AnnotationThreadStore:
    """A `daemon.notify.ThreadStore` backed by the Deployment (see the module docstring)."""

    def __init__(self, *, lookup: Lookup, writer: ClusterWriter, capacity: int = 4096) -> None:
        self._lookup = lookup
        self._writer = writer
        self._capacity = capacity
        self._roots: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, rollout_key: str) -> tuple[str, str] | None:
        root = self._roots.get(rollout_key)
        if root is not None:
            return root
        namespace, name = _deployment_of(rollout_key)
        deployment = self._lookup(namespace, name) if name else None
        annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
        return _parse(annotations.get(THREADS_ANNOTATION)).get(rollout_key)

    def put(self, rollout_key: str, channel: str, ts: str) -> None:
        self._roots[rollout_key] = (channel, ts)
        self._roots.move_to_end(rollout_key)
        while len(self._roots) > self._capacity:
            self._roots.popitem(last=False)
        namespace, name = _deployment_of(rollout_key)
        if name and self._writer.may_write():
            task = asyncio.create_task(self._write(namespace, name), name=f"slack-thread-{namespace}-{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, namespace: str, name: str) -> None:
        prefix = f"{namespace}/{name}/"
        mine = [(k, v) for k, v in self._roots.items() if k.startswith(prefix)][-KEPT_PER_DEPLOYMENT:]
        value = json.dumps({k: list(v) for k, v in mine}, separators=(",", ":"))
        try:
            await self._writer.annotate(namespace, name, {THREADS_ANNOTATION: value})
        except NotWriting:
            return
        except Exception as exc:  # a lost thread id costs a new thread, never an alert
            log.warning("could not remember the Slack thread", namespace=namespace, deployment=name, error=str(exc))


def _deployment_of(rollout_key: str) -> tuple[str, str]:
    parts = rollout_key.split("/")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", "")
