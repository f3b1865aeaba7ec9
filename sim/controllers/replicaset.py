"""The ReplicaSet controller, and the ownership helpers the other controllers share.

`ReplicaSetController.sync(namespace, name)` does what kube-controller-manager's does:

* claims pods: the ones whose controller ownerReference is this ReplicaSet and whose labels still match
  its selector; adopts orphans that match (adds the ownerReference) and releases owned pods that no
  longer match (removes it), so relabelling a pod takes it out of service and gets it replaced;
* creates pods (`<rs>-<5 safe chars>`, template labels and annotations, controller ownerReference,
  `spec.nodeName: sim-node-1`) or deletes them until the active ones (not terminating, not ended)
  equal `spec.replicas`. Deletion is graceful: `deletionTimestamp` = now + grace period, and the
  kubelet removes the pod once its containers stopped. Pods are deleted in upstream's order:
  unscheduled, pending, not ready, lower `pod-deletion-cost`, ready for less time, more restarts,
  newer first;
* publishes `status.replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` (Ready
  for at least `minReadySeconds`, with a timer for pods about to become available), `observedGeneration`
  and a `ReplicaFailure` condition while pod creation or deletion fails;
* records `SuccessfulCreate` / `SuccessfulDelete` (and Warning `FailedCreate` / `FailedDelete`)
  events from `replicaset-controller`.

Zero-valued status counters are left out of the object, as the real API's JSON omits them
(`replicas` is always present, the rest are `omitempty`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from daemon.clock import Clock
from sim.controllers.events import NORMAL, WARNING, EventRecorder
from sim.controllers.hashing import random_suffix
from sim.controllers.kubelet import (
    NODE_NAME,
    parse_time,
    pod_is_active,
    pod_is_available,
    pod_is_ready,
    pod_is_terminating,
    pod_ready_since,
    qos_class,
)
from sim.resources import PODS, REPLICASETS, ResourceType
from sim.selectors import selector_matches
from sim.store import ApiError, Obj, Store, copy_json, rfc3339
from sim.strategies import apply_defaults

__all__ = [
    "BURST_REPLICAS",
    "DELETION_COST_ANNOTATION",
    "ReplicaSetController",
    "claim",
    "controller_ref",
    "create_pod",
    "delete_pod",
    "is_controlled_by",
    "owner_reference",
    "pod_deletion_order",
    "set_condition_list",
]

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
BURST_REPLICAS = 500
"""At most this many pods are created or deleted per sync (upstream's `burstReplicas`)."""

Schedule = Callable[[str, str, float], None]


# ----- ownership -----

def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def is_controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner["metadata"].get("uid")


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    """A controller ownerReference pointing at `owner` (blocking its foreground deletion, as upstream's do)."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def claim(store: Store, rt: ResourceType, owner: Mapping[str, Any], selector: Mapping[str, Any],
          candidates: Iterable[Obj]) -> list[Obj]:
    """The candidates `owner` controls after adopting matching orphans and releasing non-matching ones.

    Returns the stored objects (read-only) as they are after any adoption.
    """
    uid = owner["metadata"].get("uid")
    owner_deleting = bool(owner["metadata"].get("deletionTimestamp"))
    owned: list[Obj] = []
    for obj in candidates:
        meta = obj["metadata"]
        ref = controller_ref(obj)
        matches = selector_matches(selector, meta.get("labels") or {})
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches or owner_deleting:
                owned.append(obj)
                continue
            released = copy_json(obj)
            released["metadata"]["ownerReferences"] = [
                r for r in meta.get("ownerReferences") or () if r.get("uid") != uid]
            if not released["metadata"]["ownerReferences"]:
                del released["metadata"]["ownerReferences"]
            _write_quietly(store, rt, released)
            continue
        if not matches or owner_deleting or meta.get("deletionTimestamp"):
            continue
        adopted = copy_json(obj)
        adopted["metadata"]["ownerReferences"] = [*(meta.get("ownerReferences") or ()), owner_reference(owner)]
        stored = _write_quietly(store, rt, adopted)
        if stored is not None:
            owned.append(store.peek(rt, meta.get("namespace", ""), meta["name"]) or stored)
    return owned


def _write_quietly(store: Store, rt: ResourceType, obj: Obj) -> Obj | None:
    """Replace `obj` if it is unchanged since read; a lost race is left for the next sync to see."""
    meta = obj["metadata"]
    try:
        return store.replace(rt, obj, namespace=meta.get("namespace", ""), name=meta["name"],
                             expect_rv=meta.get("resourceVersion"))
    except ApiError as err:
        if err.code in (404, 409):
            return None
        raise


def set_condition_list(conditions: list[Obj], condition: Obj) -> list[Obj]:
    """`conditions` with `condition` replacing any of its type (appended at the end)."""
    return [c for c in conditions if c.get("type") != condition.get("type")] + [condition]


# ----- pods -----

def create_pod(store: Store, owner: Mapping[str, Any], template: Mapping[str, Any], *,
               extra_labels: Mapping[str, str] | None = None, node_name: str = NODE_NAME,
               rng: random.Random | None = None) -> Obj:
    """Create a pod from a pod template, controlled by `owner`, named `<owner>-<5 safe chars>`."""
    meta = owner["metadata"]
    template_meta = template.get("metadata") or {}
    spec = copy_json(dict(template.get("spec") or {}))
    spec["nodeName"] = node_name
    labels = {**(template_meta.get("labels") or {}), **(extra_labels or {})}
    prefix = f"{meta['name']}-"
    pod_meta: Obj = {"generateName": prefix, "namespace": meta["namespace"], "labels": labels,
                     "ownerReferences": [owner_reference(owner)]}
    if template_meta.get("annotations"):
        pod_meta["annotations"] = copy_json(template_meta["annotations"])
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
    # What the API server would do to a pod created through it.
    apply_defaults(PODS, pod)
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    for attempt in range(8):
        pod_meta["name"] = prefix + random_suffix(5, rng=rng)
        try:
            return store.create(PODS, pod)
        except ApiError as err:
            # A name collision is retried with a new suffix, as generateName does server-side.
            if err.reason != "AlreadyExists" or attempt == 7:
                raise
    raise AssertionError("unreachable")


def delete_pod(store: Store, pod: Mapping[str, Any], now: float) -> None:
    """Delete a pod gracefully: mark it with `deletionTimestamp` = now + grace; the kubelet removes it."""
    meta = pod["metadata"]
    if meta.get("deletionTimestamp"):
        return
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    grace = 30 if grace is None else int(grace)
    if grace <= 0:
        store.delete(PODS, meta["namespace"], meta["name"])
        return
    marked = copy_json(dict(pod))
    marked["metadata"]["deletionTimestamp"] = rfc3339(now + grace)
    marked["metadata"]["deletionGracePeriodSeconds"] = grace
    store.replace(PODS, marked, namespace=meta["namespace"], name=meta["name"], expect_rv=meta["resourceVersion"])


def _created(obj: Mapping[str, Any]) -> float:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    return parse_time(str(stamp)) if stamp else 0.0


def pod_deletion_order(pods: Iterable[Obj]) -> list[Obj]:
    """Pods in the order a scale-down deletes them (upstream's `ActivePodsWithRanks`, one node)."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}

    def key(pod: Obj) -> tuple[int, int, int, int, float, int, float, str]:
        status = pod.get("status") or {}
        cost_text = ((pod["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION)) or "0"
        try:
            cost = int(cost_text)
        except ValueError:
            cost = 0
        restarts = max((int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ()), default=0)
        ready_since = pod_ready_since(pod) or 0.0
        return (1 if (pod.get("spec") or {}).get("nodeName") else 0,
                phase_rank.get(str(status.get("phase")), 3),
                1 if pod_is_ready(pod) else 0,
                cost,
                -ready_since,
                -restarts,
                -_created(pod),
                pod["metadata"]["name"])

    return sorted(pods, key=key)


# ----- the controller -----

class ReplicaSetController:
    """Keeps each ReplicaSet's pods at `spec.replicas` and reports its status."""

    def __init__(self, store: Store, clock: Clock, *, schedule: Schedule, node_name: str = NODE_NAME,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.node_name = node_name
        self._schedule = schedule
        self._rng = rng
        self._events = EventRecorder(store, clock, "replicaset-controller")

    def sync(self, namespace: str, name: str) -> None:
        rs = self.store.peek(REPLICASETS, namespace, name)
        if rs is None:
            return  # the garbage collector deletes its pods
        spec = rs.get("spec") or {}
        selector = spec.get("selector") or {}
        candidates, _ = self.store.list_objects(PODS, namespace)
        pods = claim(self.store, PODS, rs, selector, candidates)
        active = [p for p in pods if pod_is_active(p)]
        failure: Obj | None = None
        if not rs["metadata"].get("deletionTimestamp"):
            failure = self._manage(rs, active)
            # Count what the store holds now: new pods are in, pods just marked for deletion are out.
            active = [p for p in self.store.list_objects(PODS, namespace)[0]
                      if is_controlled_by(p, rs) and pod_is_active(p)]
        self._update_status(rs, active, failure)

    def _manage(self, rs: Mapping[str, Any], active: list[Obj]) -> Obj | None:
        """Create or delete pods; a `ReplicaFailure` condition when that failed, else None."""
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        now = self.clock.now()
        if diff < 0:
            template = (rs.get("spec") or {}).get("template") or {}
            for _ in range(min(-diff, BURST_REPLICAS)):
                try:
                    pod = create_pod(self.store, rs, template, node_name=self.node_name, rng=self._rng)
                except ApiError as err:
                    self._events.event(rs, WARNING, "FailedCreate", f"Error creating: {err.message}")
                    return _failure("FailedCreate", err.message, now)
                self._events.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        elif diff > 0:
            for pod in pod_deletion_order(active)[:min(diff, BURST_REPLICAS)]:
                try:
                    delete_pod(self.store, pod, now)
                except ApiError as err:
                    if err.code == 404:
                        continue
                    self._events.event(rs, WARNING, "FailedDelete",
                                       f"Error deleting: {err.message}")
                    return _failure("FailedDelete", err.message, now)
                self._events.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        return None

    def _update_status(self, rs: Mapping[str, Any], active: list[Obj], failure: Obj | None) -> None:
        meta = rs["metadata"]
        spec = rs.get("spec") or {}
        now = self.clock.now()
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels: Mapping[str, str] = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        fully = sum(1 for p in active
                    if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in template_labels.items()))
        ready = [p for p in active if pod_is_ready(p) and not pod_is_terminating(p)]
        available = [p for p in ready if pod_is_available(p, min_ready, now)]
        status: Obj = {"replicas": len(active)}
        for key, value in (("fullyLabeledReplicas", fully), ("readyReplicas", len(ready)),
                           ("availableReplicas", len(available)), ("observedGeneration", meta.get("generation", 0))):
            if value:
                status[key] = value
        old_status = rs.get("status") or {}
        conditions: list[Obj] = [c for c in old_status.get("conditions") or () if c.get("type") != "ReplicaFailure"]
        old_failure = next((c for c in old_status.get("conditions") or () if c.get("type") == "ReplicaFailure"), None)
        if failure is not None:
            conditions.append(old_failure if old_failure is not None else failure)
        if conditions:
            status["conditions"] = conditions
        if status != old_status:
            updated = dict(rs)
            updated["status"] = status
            self.store.replace(REPLICASETS, updated, namespace=meta["namespace"], name=meta["name"],
                               expect_rv=meta["resourceVersion"])
        # Pods that are Ready but not yet available become available without any event: wake up then.
        if min_ready > 0:
            pending = [since + min_ready for p in ready if p not in available
                       if (since := pod_ready_since(p)) is not None]
            if pending:
                self._schedule(meta["namespace"], meta["name"], max(0.0, min(pending) - now))


def _failure(reason: str, message: str, now: float) -> Obj:
    return {"type": "ReplicaFailure", "status": "True", "lastTransitionTime": rfc3339(now), "reason": reason,
            "message": message}
