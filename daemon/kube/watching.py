"""List+watch of one resource kind, with resume, 410 re-list and reconnect with backoff.

One `Informer` per resource kind (Deployments, ReplicaSets) serves every watched namespace: a
cluster-wide watch when no namespaces are given, otherwise one stream per namespace (what
namespaced RBAC allows). The informer keeps a cache of the objects and calls a handler with
`ADDED`, `MODIFIED` or `DELETED` for every change, in order.

Resume and re-list: the informer remembers the last resourceVersion it saw (bookmarks included)
and re-opens the watch from there when the server closes the stream. When the server says 410
(the version is too old), it lists again and reconciles the fresh list with its cache: objects
that appeared are reported ADDED, objects whose resourceVersion changed MODIFIED, objects that
vanished DELETED. So a handler sees every state change it would have seen, none twice.
Connection failures back off exponentially (capped) and retry forever; the informer only stops
when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.clock import Clock, SystemClock
from daemon.kube.client import KubeApiError, KubeClient, KubeError, ResourceExpired, api_path
from daemon.kube.sharing import (
    LAST_APPLIED,
    CommonValues,
    PodSpecPool,
    compact,
    share_page,
    share_strings,
    trimmed,
)

__all__ = ["LAST_APPLIED", "PAGE_SIZE", "Backoff", "CollectorPause", "Informer", "PodSpecPool", "compact",
           "share_strings"]

Obj = dict[str, Any]
Handler = Callable[[str, Obj], Awaitable[None]]

log = structlog.get_logger("rollguard.watch")

PAGE_SIZE = 250
"""Objects per page of a list. A page is decoded in one go, holding the event loop: 500 real-shaped
Deployments (~2 MB of JSON) held it ~50 ms, which `/healthz` and the analyses wait through; smaller
pages cost the API server more requests."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, in seconds."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.initial * 2 ** min(attempt, 16)))


def object_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class Informer:
    """Keeps a cache of one resource kind current and reports every change to a handler."""

    def __init__(self, client: KubeClient, *, group_version: str, plural: str,
                 namespaces: tuple[str, ...] = (), label_selector: str | None = None,
                 clock: Clock | None = None, backoff: Backoff | None = None,
                 watch_timeout: int = 300, on_relist: Callable[[str], None] | None = None,
                 pod_specs: PodSpecPool | None = None, common: CommonValues | None = None) -> None:
        self._client = client
        self._pod_specs = pod_specs
        self._common = common
        """Where recurring small parts of objects are held once (None: not shared)."""
        """Where Deployments and ReplicaSets share their equal pod specs (None: not shared)."""
        self._group_version = group_version
        self.plural = plural
        self._namespaces: tuple[str | None, ...] = namespaces or (None,)
        self._selector = label_selector
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self.cache: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()
        """Set once every namespace has been listed for the first time."""
        self.relists = 0
        """How many times a 410 forced a re-list (for metrics and tests)."""
        self._on_relist = on_relist
        """Called with the resource (plural) at each forced re-list: the daemon counts it in
        `rollguard_watch_relists{resource}`."""
        self._synced_namespaces: set[str | None] = set()

    async def run(self, handler: Handler) -> None:
        """Run until cancelled; one stream per namespace (or one cluster-wide)."""
        async with asyncio.TaskGroup() as group:
            for namespace in self._namespaces:
                group.create_task(self._run_namespace(namespace, handler),
                                  name=f"watch-{self.plural}-{namespace or 'all'}")

    async def _run_namespace(self, namespace: str | None, handler: Handler) -> None:
        path = api_path(self._group_version, self.plural, namespace)
        params = {"labelSelector": self._selector} if self._selector else {}
        failures = 0
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist(path, params, namespace, handler)
                    self._synced_namespaces.add(namespace)
                    if len(self._synced_namespaces) == len(self._namespaces):
                        self.synced.set()
                async for event in self._client.watch(path, {**params, "resourceVersion": resource_version},
                                                      timeout_seconds=self._watch_timeout):
                    failures = 0
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if event.get("type") == "BOOKMARK":
                        resource_version = rv or resource_version
                        continue
                    kind = str(event.get("type"))
                    obj = compact(trimmed([obj])[0])
                    # A deleted object leaves the cache: nothing to share, and nothing to remember for later.
                    await self._apply(kind, obj if kind == "DELETED" else self._shared([obj], strings=False)[0],
                                      handler)
                    resource_version = rv or resource_version
            except ResourceExpired as exc:
                log.info("watch expired, re-listing", resource=self.plural, namespace=namespace, reason=exc.message)
                self.relists += 1
                if self._on_relist is not None:
                    self._on_relist(self.plural)
                resource_version = None
            except KubeApiError as exc:
                failures += 1
                log.warning("watch failed", resource=self.plural, namespace=namespace, code=exc.code,
                            reason=exc.reason, error=exc.message, attempt=failures)
                if exc.code in (401, 403, 404):
                    # Not retriable by waiting alone, but a Role may be fixed; back off to the cap.
                    failures = max(failures, 8)
                await self._clock.sleep(self._backoff.delay(failures))
            except KubeError as exc:
                failures += 1
                log.warning("API server unreachable, retrying", resource=self.plural, namespace=namespace,
                            error=str(exc), attempt=failures)
                await self._clock.sleep(self._backoff.delay(failures))

    async def _relist(self, path: str, params: dict[str, str], namespace: str | None, handler: Handler) -> str:
        """List, reconcile the cache with what the server has now, and return the list's resourceVersion."""
        listing, big = await self._list(path, params)
        try:
            fresh = {object_key(item): item for item in listing.get("items") or []}
            stale = [key for key in self.cache if (namespace is None or key[0] == namespace) and key not in fresh]
            for key in stale:
                await self._apply("DELETED", self.cache[key], handler, key=key)
            for key, item in fresh.items():
                known = self.cache.get(key)
                if known is None:
                    await self._apply("ADDED", item, handler, key=key)
                elif (known.get("metadata") or {}).get("resourceVersion") != item["metadata"].get("resourceVersion"):
                    await self._apply("MODIFIED", item, handler, key=key)
            return str((listing.get("metadata") or {}).get("resourceVersion") or "0")
        finally:
            if big:
                COLLECTOR.release()

    async def _list(self, path: str, params: dict[str, str], *, page_size: int = PAGE_SIZE) -> tuple[Obj, bool]:
        """`KubeClient.list`, page by page, dropping each page's managedFields (and sharing its strings)
        before the next page is decoded (it is already asked for); and whether the list was big (more than
        one page: `COLLECTOR` is then held, and the caller releases it once the list is handed over).

        Dropped per page rather than after the whole list, the memory they took is re-used by the next
        page instead of being left as holes in the heap (10,000 real-shaped Deployments + ReplicaSets:
        408 MiB RSS keeping them, 383 dropping them after the list, 248 per page; bench/RESULTS.md).
        """
        query: dict[str, Any] = {**params, "limit": page_size}
        first = await self._client.get(path, query)
        token = (first.get("metadata") or {}).get("continue")
        big = bool(token)
        if big:
            COLLECTOR.hold()
        items: list[Obj] = []
        page = first
        ahead: asyncio.Task[Obj] | None = None
        try:
            while True:
                if token:
                    # The next page is asked for before this one is trimmed, so the API server prepares it
                    # meanwhile; awaiting it lets `/healthz`, the lease and the analyses in between pages
                    # (decoding one holds the event loop, ~0.1 ms per real-shaped object).
                    ahead = asyncio.create_task(self._client.get(path, {**query, "continue": token}),
                                                name=f"list-{self.plural}-page")
                    await asyncio.sleep(0)
                items.extend(self._shared(trimmed(page.get("items") or []), strings=True))
                if ahead is None:
                    break
                page = await ahead
                ahead = None
                token = (page.get("metadata") or {}).get("continue")
        except BaseException:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            if big:
                COLLECTOR.release()
            raise
        first["items"] = items
        first.setdefault("metadata", {}).pop("continue", None)
        return first, big

    def _shared(self, items: list[Obj], *, strings: bool) -> list[Obj]:
        """`items` (just decoded and trimmed) holding their recurring parts and pod specs once, and with
        `strings` their short strings interned (`daemon.kube.sharing.share_page`)."""
        return share_page(items, is_deployment=self.plural == "deployments", pod_specs=self._pod_specs,
                          common=self._common, strings=strings)

    async def _apply(self, kind: str, obj: Obj, handler: Handler, *, key: tuple[str, str] | None = None) -> None:
        """Cache `obj` (trimmed: a listed or watched object, or one of the cache's own; `key` its
        `object_key` when known) and report it."""
        if key is None:
            key = object_key(obj)
        if kind == "DELETED":
            self.cache.pop(key, None)
            if self._pod_specs is not None and self.plural == "deployments":
                self._pod_specs.forget(key)
        elif kind in ("ADDED", "MODIFIED"):
            known = self.cache.get(key)
            # A re-opened watch may repeat an object we already have; report each version once.
            if known is not None and known["metadata"].get("resourceVersion") == obj["metadata"].get(
                    "resourceVersion"):
                return
            self.cache[key] = obj
            kind = "MODIFIED" if known is not None else "ADDED"
        else:
            log.warning("unexpected watch event", resource=self.plural, type=kind)
            return
        await handler(kind, obj)


class CollectorPause:
    """Pauses Python's cyclic garbage collector while big lists are read, and then freezes what they built.

    A full collection visits every tracked object: with 10,000 real-shaped Deployments and ReplicaSets
    cached (~2 million dicts and lists) one takes ~0.5 s, during which the event loop stands still
    (`/healthz` waited up to 575 ms at start; 63 ms with the collector off), and the heap's growth
    during a big list sets off several. Cached objects are trees of JSON values (no reference cycles:
    reference counting frees them when replaced), so once a big list is handed over everything alive
    is moved to the collector's permanent generation (`gc.freeze`): later collections skip it. Reading
    a list makes no cyclic garbage that freezing could keep alive (measured: 0 unreachable objects after
    listing 1,000 Deployments with the collector off). Holders nest (two informers list at once); the
    collector is restored as it was when the last one releases."""

    def __init__(self) -> None:
        self._holders = 0
        self._was_enabled = False
        self.freezes = 0
        """How many times the last holder froze the heap (for tests)."""

    def hold(self) -> None:
        if self._holders == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            gc.freeze()
            self.freezes += 1
            if self._was_enabled:
                gc.enable()


COLLECTOR = CollectorPause()
"""The process' one pause (the collector is process-wide)."""
