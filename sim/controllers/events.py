"""core/v1 Events as client-go's event recorder writes them, straight into the Store.

One `EventRecorder` per component (`deployment-controller`, `replicaset-controller`, `job-controller`,
`kubelet`, `default-scheduler`). An event is::

    {"apiVersion": "v1", "kind": "Event",
     "metadata": {"name": "web.17f3a2b4c5d6e7f8", "namespace": "shop"},
     "involvedObject": {"kind": "Deployment", "namespace": "shop", "name": "web", "uid": "…",
                        "apiVersion": "apps/v1", "resourceVersion": "48190"},
     "reason": "ScalingReplicaSet", "message": "…", "type": "Normal",
     "source": {"component": "deployment-controller"},
     "firstTimestamp": "…", "lastTimestamp": "…", "count": 1,
     "eventTime": null, "reportingComponent": "deployment-controller", "reportingInstance": ""}

named `<involvedObject.name>.<hex UnixNano>` in the object's namespace (`default` for cluster-scoped
objects). Like client-go's correlator:

* a repeat of the same (source, object, type, reason, message) bumps `count` and `lastTimestamp` of
  the event already written (the real recorder sends that as a strategic-merge PATCH);
* once 10 distinct messages with the same (source, object, type, reason) were seen within 10 minutes,
  further ones are merged into a single event whose message starts `(combined from similar events): `.

client-go's per-object spam filter (25 events burst, then one per 5 minutes) is deliberately left
out: the simulator's tests and demos read every event. Failures to write an event (a namespace being
deleted) are logged and dropped, as the real recorder drops them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.clock import Clock
from sim.resources import EVENTS
from sim.store import ApiError, Obj, Store, rfc3339

__all__ = ["NORMAL", "WARNING", "EventRecorder", "object_reference"]

NORMAL = "Normal"
WARNING = "Warning"

_AGGREGATE_MAX_MESSAGES = 10
_AGGREGATE_WINDOW = 600.0
"""Seconds: client-go's `maxIntervalInSeconds` for the similar-event aggregator."""
_COMBINED_PREFIX = "(combined from similar events): "
_CACHE_SIZE = 4096
"""Entries of each correlation cache (client-go's `maxLruCacheEntries`): memory stays bounded."""

log = structlog.get_logger(__name__)


def object_reference(obj: Mapping[str, Any]) -> Obj:
    """The `involvedObject` (an ObjectReference) for a stored object."""
    meta = obj.get("metadata") or {}
    ref: Obj = {"kind": obj.get("kind", ""), "name": meta.get("name", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    for key, value in (("uid", meta.get("uid")), ("apiVersion", obj.get("apiVersion")),
                       ("resourceVersion", meta.get("resourceVersion"))):
        if value:
            ref[key] = value
    # Key order as the API server prints it (kind, namespace, name, uid, apiVersion, resourceVersion).
    order = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
    return {k: ref[k] for k in order if k in ref}


@dataclass
class _Similar:
    """Distinct messages seen for one (source, object, type, reason) within the aggregation window."""

    messages: set[str] = field(default_factory=set)
    last_seen: float = 0.0


class _Nanos:
    """A process-wide strictly increasing UnixNano, so two events in the same instant get distinct names."""

    last = 0

    @classmethod
    def next(cls, now: float) -> int:
        value = max(int(now * 1_000_000_000), cls.last + 1)
        cls.last = value
        return value


class EventRecorder:
    """Writes core/v1 Events for one component."""

    def __init__(self, store: Store, clock: Clock, component: str, *, host: str = "") -> None:
        self.store = store
        self.clock = clock
        self.component = component
        self.host = host
        # Event identity → (namespace, event name) of the event a repeat should bump.
        self._written: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()
        self._similar: OrderedDict[tuple[str, ...], _Similar] = OrderedDict()

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an event about `obj` (a stored object with kind, metadata.name/uid)."""
        try:
            self._record(obj, type_, reason, message)
        except ApiError as err:
            log.warning("event dropped", component=self.component, reason=reason, error=err.message)

    def _record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        now = self.clock.now()
        involved = object_reference(obj)
        namespace = involved.get("namespace") or "default"
        ident: tuple[str, ...] = (self.component, self.host, involved["kind"], namespace, involved["name"],
                 involved.get("uid", ""), involved.get("apiVersion", ""), type_, reason)
        similar = self._similar.get(ident)
        if similar is None or now - similar.last_seen > _AGGREGATE_WINDOW:
            similar = self._similar[ident] = _Similar()
        _touch(self._similar, ident)
        similar.last_seen = now
        if message in similar.messages or len(similar.messages) < _AGGREGATE_MAX_MESSAGES:
            similar.messages.add(message)
            key: tuple[str, ...] = (*ident, message)
        else:
            message = _COMBINED_PREFIX + message
            key = ident

        written = self._written.get(key)
        if written is not None:
            _touch(self._written, key)
            current = self.store.peek(EVENTS, written[0], written[1])
            if current is not None:
                updated = dict(current)
                updated["count"] = int(current.get("count") or 1) + 1
                updated["lastTimestamp"] = rfc3339(now)
                updated["message"] = message
                self.store.replace(EVENTS, updated, namespace=written[0], name=written[1])
                return

        stamp = rfc3339(now)
        source: Obj = {"component": self.component}
        if self.host:
            source["host"] = self.host
        name = f"{involved['name']}.{_Nanos.next(now):x}"
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "eventTime": None,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        self.store.create(EVENTS, event, namespace=namespace)
        self._written[key] = (namespace, name)
        _touch(self._written, key)


def _touch(cache: OrderedDict[tuple[str, ...], Any], key: tuple[str, ...]) -> None:
    """Mark `key` most recently used and evict the least recently used entries beyond the cache size."""
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
