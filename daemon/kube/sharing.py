"""What the informers do to each object before caching it, so 10,000 Deployments and ReplicaSets fit.

Nothing here changes a value a reader sees: `trimmed` drops what rollguard never reads (managedFields, the
`kubectl apply` annotation); the rest only makes equal values one object — strings (`share_strings`,
`compact`), a Deployment's pod spec and its ReplicaSet's (`PodSpecPool`), small parts that recur across
objects (`CommonValues`). Cached objects are never changed in place afterwards (a change is a new object
from the API server), which is what makes sharing safe. Figures: bench/RESULTS.md.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any

Obj = dict[str, Any]

_INTERNED_MAX = 256
"""Strings up to this length (characters) are interned in cached objects; longer ones are rarely shared."""
_intern = sys.intern


def share_strings(value: Any) -> Any:
    """`value` (decoded JSON: dicts, lists, scalars) with its short string values interned, in place.

    Each decoded object holds its own copy of every repeated value ("apps/v1", "RollingUpdate",
    "IfNotPresent", the image, the Deployment's name in its labels, selector and template); interned,
    one copy serves every cached object (10,000 real-shaped Deployments: 6.9 → 4.5 kB each). Equal
    before and after: only which string object holds each value changes, and strings are immutable.
    Keys are left alone: one `json.loads` already shares the keys of every object it decodes."""
    if type(value) is dict:
        for key, item in value.items():
            kind = type(item)
            if kind is str:
                if len(item) <= _INTERNED_MAX:
                    value[key] = _intern(item)
            elif kind is dict or kind is list:
                share_strings(item)
    elif type(value) is list:
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str:
                if len(item) <= _INTERNED_MAX:
                    value[index] = _intern(item)
            elif kind is dict or kind is list:
                share_strings(item)
    return value


def compact(value: Any) -> Any:
    """A copy of decoded JSON with its keys and short strings interned (equal to `value`, smaller).

    For objects decoded one at a time (watch events), whose keys no other object shares."""
    kind = type(value)
    if kind is str:
        return _intern(value) if len(value) <= _INTERNED_MAX else value
    if kind is dict:
        return {_intern(k) if type(k) is str else k: compact(v) for k, v in value.items()}
    if kind is list:
        return [compact(v) for v in value]
    return value


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""`kubectl apply`'s copy of the whole manifest as JSON, on every applied Deployment: a long string of its own
(~0.4-2 kB), which nothing in rollguard reads."""


def trimmed(items: list[Obj]) -> list[Obj]:
    """Drop, in place, what rollguard never reads and a real API server puts on most objects: their
    `metadata.managedFields` (often the largest part of a Deployment or ReplicaSet) and the
    `kubectl apply` annotation. rollguard reads only its own annotations and the controller's revision
    ones by name, and writes with merge patches of its own keys, never a cached object back
    (tests/test_start_memory.py)."""
    for item in items:
        meta = item.get("metadata") or {}
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if type(annotations) is dict:
            annotations.pop(LAST_APPLIED, None)
    return items


class PodSpecPool:
    """The pod spec (`spec.template.spec`) of each Deployment, for its ReplicaSets to share when theirs is equal.

    A Deployment's current ReplicaSet carries the same pod spec as the Deployment (only the template's
    labels differ, by pod-template-hash): cached apart, every container, port and setting is held twice.
    An object whose pod spec equals (`==`) the one remembered for its Deployment gets that very dict
    instead of its own; the Deployment's own spec is remembered (a ReplicaSet's only until its Deployment
    is seen). Values are unchanged — only which equal dict holds them — so every reader sees what the API
    server sent; cached objects are never changed in place (a change is a new object from the server).
    10,000 real-shaped Deployments and ReplicaSets: ~2 kB less per pair (bench/RESULTS.md)."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], Obj] = {}

    def __len__(self) -> int:
        return len(self._specs)

    def share(self, obj: Obj, *, deployment: str | None, is_deployment: bool) -> bool:
        """Give `obj` (the Deployment named `deployment`, or one of its ReplicaSets) the remembered equal
        pod spec, or remember its own (a Deployment's always, a ReplicaSet's when none is); whether `obj`
        was given the remembered one."""
        template = (obj.get("spec") or {}).get("template")
        spec = template.get("spec") if type(template) is dict else None
        if not deployment or type(spec) is not dict:
            return False
        key = (str((obj.get("metadata") or {}).get("namespace", "")), deployment)
        known = self._specs.get(key)
        if known is not None and known is not spec and known == spec:
            template["spec"] = known  # type: ignore[index]
            return True
        if known is None or is_deployment:
            self._specs[key] = spec
        return False

    def forget(self, deployment: tuple[str, str]) -> None:
        """Drop what is remembered for a deleted Deployment (namespace, name)."""
        self._specs.pop(deployment, None)


def deployment_of(replica_set: Obj) -> str | None:
    """The name of the Deployment controlling `replica_set`, if any."""
    for ref in (replica_set.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == "Deployment":
            return str(ref.get("name", ""))
    return None


class CommonValues:
    """Small parts that recur across objects, held once: equal values get the first one seen.

    Only at the places `share_common` names (a Deployment's update strategy, containers' resources and
    ports, the pod's securityContext, a ReplicaSet's annotations and status), whose values repeat across
    most objects of a cluster (`RollingUpdate` with 25%/25%, `{}`, the same three controller annotations).
    Values are keyed by their content with types kept apart (1, 1.0, True and "1" are different keys) and
    order kept (equal dicts written in another order are not merged). At most `limit` values are kept:
    past it, new values are cached as they are (bounded memory, whatever the cluster holds)."""

    def __init__(self, *, limit: int = 4096) -> None:
        self._known: dict[Hashable, Any] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._known)

    def shared(self, value: Any) -> Any:
        """The value equal to `value` seen first (or `value` itself, remembered when there is room)."""
        key = _content_key(value, 3)
        if key is None:
            return value
        known = self._known.get(key)
        if known is not None:
            return known
        if len(self._known) < self._limit:
            # Held values have their strings interned: objects given one later need not walk it
            # (`share_page`), whatever becomes of the object that brought it.
            self._known[key] = share_strings(value)
        return value


def _content_key(value: Any, depth: int) -> Hashable | None:
    """A hashable key equal for equal JSON values of the same types and order; None for one too deep or big
    (more than 8 members at a level, more than `depth` levels)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float or kind is bool or value is None:
        return (kind.__name__, value)
    if depth == 0 or kind not in (dict, list) or len(value) > 8:
        return None
    if kind is dict:
        members: list[Hashable] = []
        for k, v in value.items():
            child = _content_key(v, depth - 1)
            if child is None:
                return None
            members.append((k, child))
        return ("{", tuple(members))
    items: list[Hashable] = []
    for v in value:
        child = _content_key(v, depth - 1)
        if child is None:
            return None
        items.append(child)
    return ("[", tuple(items))


Replaced = list[tuple[Obj, str, Any]]
"""Where a part of an object was replaced by one held before: (parent, key, the held value)."""


def share_common(obj: Obj, values: CommonValues, *, is_deployment: bool, replaced: Replaced | None = None) -> Obj:
    """`obj` (a Deployment or a ReplicaSet just decoded, not yet shared) with its recurring parts replaced,
    in place, by the equal ones `values` holds (each replacement noted in `replaced`, when given)."""
    spec = obj.get("spec")
    if type(spec) is not dict:
        return obj
    if is_deployment:
        _share_key(spec, "strategy", values, replaced)
    else:
        _share_key(obj.get("metadata"), "annotations", values, replaced)
        _share_key(obj, "status", values, replaced)
    template = spec.get("template")
    pod = template.get("spec") if type(template) is dict else None
    if type(pod) is dict:
        _share_key(pod, "securityContext", values, replaced)
        containers = pod.get("containers")
        if type(containers) is list:
            for container in containers:
                if type(container) is dict:
                    _share_key(container, "resources", values, replaced)
                    _share_key(container, "ports", values, replaced)
    return obj


def _share_key(parent: Any, key: str, values: CommonValues, replaced: Replaced | None) -> None:
    if type(parent) is dict and key in parent:
        own = parent[key]
        held = values.shared(own)
        if held is not own:
            parent[key] = held
            if replaced is not None:
                replaced.append((parent, key, held))


def share_page(items: list[Obj], *, is_deployment: bool, pod_specs: PodSpecPool | None = None,
               common: CommonValues | None = None, strings: bool = True) -> list[Obj]:
    """`items` (just decoded and trimmed, of one kind) holding, in place, their recurring parts (`common`)
    and pod specs (`pod_specs`) once, and, with `strings`, their short strings interned (`share_strings`).

    Strings are interned after the parts are shared, and a part replaced by one held before is not walked
    again: the held one was walked with the object that brought it (a Deployment's current ReplicaSet
    carries its Deployment's pod spec, most of a ReplicaSet). The replaced parts are set aside (their keys
    kept in place) while the rest of the object is walked, then put back: every value is as with sharing
    strings first."""
    for item in items:
        replaced: Replaced = []
        if common is not None:
            share_common(item, common, is_deployment=is_deployment, replaced=replaced)
        if pod_specs is not None:
            owner = str((item.get("metadata") or {}).get("name", "")) if is_deployment else deployment_of(item)
            if pod_specs.share(item, deployment=owner, is_deployment=is_deployment):
                template = item["spec"]["template"]
                replaced.append((template, "spec", template["spec"]))
        if not strings:
            continue
        try:
            for parent, key, _ in replaced:
                parent[key] = None
            share_strings(item)
        finally:
            for parent, key, held in replaced:
                parent[key] = held
    return items
