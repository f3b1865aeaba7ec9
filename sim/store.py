"""The simulated cluster's object store: etcd-like, in memory.

One global resourceVersion counter across all kinds; every successful mutation bumps it, stamps the
object and emits exactly one watch event. A bounded history of events lets watches resume from a
resourceVersion; an older one gets `ApiError` 410 Expired, as a real API server's watch cache does.

The store does no defaulting and no per-kind strategy (generation bumps, the status/spec split):
the API layer does that before writing. It does keep `metadata` honest: uid, creationTimestamp,
resourceVersion, and `generation: 1` on create for kinds that have one.

Objects are plain JSON-like dicts. `get()` returns a private copy the caller may change;
`list()` returns the stored objects themselves, which callers must treat as read-only.

Keys are also kept sorted (per bucket, and per bucket and namespace), as etcd keeps them: a list page
(`list_page`) starts at its continue key by bisection and costs the page, not the whole list.

Exceptions: `ApiError` (code, reason, message) — rendered by the API server as a `Status` object.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.clock import Clock
from sim.jsondata import copy_json as copy_json, micro_time as micro_time, rfc3339 as rfc3339
from sim.resources import NAMESPACES, ResourceType

Obj = dict[str, Any]


class ApiError(Exception):
    """An API error, rendered as a `Status` object with this code, reason and message."""

    def __init__(self, code: int, reason: str, message: str, *, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found',
                    details={"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "group": rt.group, "kind": rt.plural})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists',
                    details={"name": name, "group": rt.group, "kind": rt.plural})


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


@dataclass(frozen=True)
class WatchEvent:
    """One change: `type` is ADDED, MODIFIED or DELETED; `obj` is the object after it (last state for DELETED)."""

    type: str
    bucket: str
    obj: Obj
    resource_version: int

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass
class Subscription:
    """A live feed of watch events for one bucket (or all); close it when done."""

    bucket: str | None
    queue: asyncio.Queue[WatchEvent] = field(default_factory=asyncio.Queue)
    _close: Callable[[], None] = lambda: None

    def close(self) -> None:
        self._close()


class Store:
    """In-memory objects by bucket, namespace and name, with a global resourceVersion."""

    def __init__(self, clock: Clock, *, history_size: int = 50_000) -> None:
        self.clock = clock
        self._rv = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        # The same objects by bucket → namespace → name: a namespaced list (what every controller sync
        # does) costs the size of that namespace, not of the whole cluster.
        self._by_namespace: dict[str, dict[str, dict[str, Obj]]] = {}
        # The keys of `_objects` in order, by bucket, and the names of `_by_namespace` in order, by bucket
        # and namespace: a page is found by bisection instead of sorting and scanning the whole list.
        self._sorted_keys: dict[str, list[tuple[str, str]]] = {}
        self._sorted_names: dict[str, dict[str, list[str]]] = {}
        # The same objects by bucket → (namespace, uid of their controller ownerReference) → name: a
        # Deployment's ReplicaSets are found without reading every ReplicaSet of its namespace.
        self._by_controller: dict[str, dict[tuple[str, str], dict[str, Obj]]] = {}
        self._history: deque[WatchEvent] = deque(maxlen=history_size)
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Callable[[WatchEvent], None]] = []
        # The oldest resourceVersion a watch may resume from: events after it are all in history.
        self._oldest_resumable = 1

    # ----- reads -----

    @property
    def resource_version(self) -> int:
        """The current global revision (what a list reports)."""
        return self._rv

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """A private copy of one object; `ApiError` 404 when it is missing."""
        obj = self._bucket(rt).get((self._ns(rt, namespace), name))
        if obj is None:
            raise not_found(rt, name)
        return copy_json(obj)

    def peek(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """The stored object itself (read-only) or None."""
        return self._bucket(rt).get((self._ns(rt, namespace), name))

    def list_objects(self, rt: ResourceType, namespace: str | None = None,
             predicate: Callable[[Obj], bool] | None = None) -> tuple[list[Obj], int]:
        """Stored objects (read-only!) sorted by namespace and name, and the list resourceVersion."""
        objects, _, _ = self.list_page(rt, namespace, predicate=predicate)
        return objects, self._rv

    def list_page(self, rt: ResourceType, namespace: str | None = None, *, after: tuple[str, str] | None = None,
                  limit: int | None = None, predicate: Callable[[Obj], bool] | None = None,
                  ) -> tuple[list[Obj], int, bool]:
        """One page of a list: the stored objects (read-only!) after the key `after` (namespace, name), in
        key order, that `predicate` accepts, at most `limit` of them (all when None or 0).

        Returns the page, how many stored objects come after it (counted without `predicate`: what the
        API server reports as `remainingItemCount`, only meaningful without a selector) and whether at
        least one more accepted object follows (the list continues). Costs O(log n) to find the start,
        then the objects read until the page is full (one more, to know whether the list continues).
        """
        objects: dict[str, Obj]
        keys: list[str] | list[tuple[str, str]]
        start: int
        if namespace is not None:
            objects = self._by_namespace.get(rt.bucket, {}).get(namespace, {})
            keys = self._sorted_names.get(rt.bucket, {}).get(namespace, [])
            if after is None or after[0] < namespace:
                start = 0
            elif after[0] > namespace:
                start = len(keys)
            else:
                start = bisect.bisect_right(keys, after[1])
            lookup: Callable[[Any], Obj] = objects.__getitem__
        else:
            keys = self._sorted_keys.get(rt.bucket, [])
            start = 0 if after is None else bisect.bisect_right(keys, after)
            lookup = self._bucket(rt).__getitem__
        page: list[Obj] = []
        index = start
        end = len(keys)
        while index < end:
            obj = lookup(keys[index])
            index += 1
            if predicate is not None and not predicate(obj):
                continue
            if limit and len(page) == limit:
                return page, end - index + 1, True
            page.append(obj)
        return page, 0, False

    def controlled_by(self, rt: ResourceType, namespace: str, uid: str) -> list[Obj]:
        """The stored objects (read-only!) of `namespace` whose controller ownerReference (the first with
        `controller: true`) names `uid`, sorted by name: what filtering `list_objects` by owner returns."""
        owned = self._by_controller.get(rt.bucket, {}).get((self._ns(rt, namespace), uid))
        if not owned:
            return []
        return [owned[name] for name in sorted(owned)]

    def iter_objects(self, rt: ResourceType) -> Iterator[Obj]:
        """Every stored object of a type, unordered (read-only)."""
        return iter(list(self._bucket(rt).values()))

    # ----- writes -----

    def create(self, rt: ResourceType, obj: Obj, *, namespace: str | None = None, uid: str | None = None) -> Obj:
        """Store a new object (deep-copied) and return a copy of what was stored.

        `uid` is for callers that had to choose it earlier (a Job's generated selector names it);
        otherwise a fresh one is assigned, whatever the object says.
        """
        obj = copy_json(obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if ns != meta.setdefault("namespace", ns):
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            if self.peek(NAMESPACES, "", ns) is None:
                raise not_found(NAMESPACES, ns)
        else:
            meta.pop("namespace", None)
            ns = ""
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not name:
            raise ApiError(422, "Invalid", f"{rt.kind} \"\" is invalid: metadata.name: Required value: "
                           "name or generateName is required")
        key = (ns, name)
        bucket = self._bucket(rt)
        if key in bucket:
            raise already_exists(rt, name)
        meta["uid"] = uid or str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.clock.now())
        if rt.has_generation:
            meta["generation"] = 1
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        self._commit("ADDED", rt, key, obj)
        return copy_json(obj)

    def replace(self, rt: ResourceType, obj: Obj, *, namespace: str, name: str,
                expect_rv: str | None = None) -> Obj:
        """Replace a stored object. `expect_rv` (if given) must be the stored resourceVersion, else 409.

        uid and creationTimestamp cannot change. A write that changes nothing is a no-op: no new
        resourceVersion, no event.
        """
        ns = self._ns(rt, namespace)
        bucket = self._bucket(rt)
        current = bucket.get((ns, name))
        if current is None:
            raise not_found(rt, name)
        if expect_rv and expect_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        obj = copy_json(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match the name "
                           f"on the URL ({name})")
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = ns
        for kept in ("uid", "creationTimestamp"):
            if kept in current["metadata"]:
                meta[kept] = current["metadata"][kept]
        if "deletionTimestamp" in current["metadata"]:
            meta.setdefault("deletionTimestamp", current["metadata"]["deletionTimestamp"])
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if obj == current:
            return copy_json(current)
        self._commit("MODIFIED", rt, (ns, name), obj)
        return copy_json(obj)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """Remove an object at once (no finalizers) and return its last state."""
        ns = self._ns(rt, namespace)
        bucket = self._bucket(rt)
        if (ns, name) not in bucket:
            raise not_found(rt, name)
        obj = bucket.pop((ns, name))
        self._unindex_controller(rt.bucket, (ns, name), obj)
        in_namespace = self._by_namespace[rt.bucket][ns]
        del in_namespace[name]
        if not in_namespace:
            del self._by_namespace[rt.bucket][ns]
        self._unindex(rt.bucket, (ns, name))
        self._rv += 1
        obj = copy_json(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(WatchEvent("DELETED", rt.bucket, obj, self._rv))
        return copy_json(obj)

    # ----- watching -----

    def compact(self) -> None:
        """Forget the watch history (as etcd compaction does): resuming from any older version gets 410."""
        self._history.clear()
        self._oldest_resumable = self._rv + 1

    def events_since(self, rt: ResourceType | None, resource_version: int) -> list[WatchEvent]:
        """Events after `resource_version` still in history; `ApiError` 410 when some were dropped."""
        self.ensure_resumable(resource_version)
        bucket = rt.bucket if rt is not None else None
        return [e for e in self._history
                if e.resource_version > resource_version and (bucket is None or e.bucket == bucket)]

    def ensure_resumable(self, resource_version: int) -> None:
        """`ApiError` 410 when events after `resource_version` were dropped from history (O(1): a list's
        continue is checked with it at every page, without copying the history)."""
        if resource_version < self._oldest_resumable - 1:
            raise expired(resource_version, self._oldest_resumable)

    def subscribe(self, rt: ResourceType | None = None) -> Subscription:
        """A queue that receives every future event of `rt` (all types when None)."""
        sub = Subscription(rt.bucket if rt is not None else None)
        self._subscriptions.append(sub)

        def close() -> None:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

        sub._close = close
        return sub

    def add_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Call `listener` synchronously after every change (controllers enqueue work from it)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Stop calling `listener` (no error if it was not registered)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    # ----- internals -----

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rt.bucket, {})

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rt.namespaced else ""

    def _commit(self, kind: str, rt: ResourceType, key: tuple[str, str], obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        bucket = self._bucket(rt)
        previous = bucket.get(key)
        if previous is None:
            self._index(rt.bucket, key)
        else:
            self._unindex_controller(rt.bucket, key, previous)
        bucket[key] = obj
        uid = _controller_uid(obj)
        if uid is not None:
            self._by_controller.setdefault(rt.bucket, {}).setdefault((key[0], uid), {})[key[1]] = obj
        self._by_namespace.setdefault(rt.bucket, {}).setdefault(key[0], {})[key[1]] = obj
        self._publish(WatchEvent(kind, rt.bucket, copy_json(obj), self._rv))

    def _index(self, bucket: str, key: tuple[str, str]) -> None:
        bisect.insort(self._sorted_keys.setdefault(bucket, []), key)
        bisect.insort(self._sorted_names.setdefault(bucket, {}).setdefault(key[0], []), key[1])

    def _unindex(self, bucket: str, key: tuple[str, str]) -> None:
        keys = self._sorted_keys[bucket]
        del keys[bisect.bisect_left(keys, key)]
        by_namespace = self._sorted_names[bucket]
        names = by_namespace[key[0]]
        del names[bisect.bisect_left(names, key[1])]
        if not names:
            del by_namespace[key[0]]

    def _unindex_controller(self, bucket: str, key: tuple[str, str], obj: Obj) -> None:
        uid = _controller_uid(obj)
        if uid is None:
            return
        by_owner = self._by_controller[bucket]
        owned = by_owner[(key[0], uid)]
        del owned[key[1]]
        if not owned:
            del by_owner[(key[0], uid)]

    def _publish(self, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._oldest_resumable = self._history[0].resource_version + 1
        self._history.append(event)
        for sub in self._subscriptions:
            if sub.bucket is None or sub.bucket == event.bucket:
                sub.queue.put_nowait(event)
        for listener in self._listeners:
            listener(event)


def _controller_uid(obj: Obj) -> str | None:
    """The uid named by the object's controller ownerReference (the first with `controller: true`), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None
