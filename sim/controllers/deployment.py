"""The Deployment controller: ReplicaSets, revisions, rolling updates, status and conditions.

A port of kube-controller-manager's `pkg/controller/deployment` (sync order, `getNewReplicaSet`,
`rolloutRolling`, `rolloutRecreate`, proportional `scale`, `cleanupDeployment`, `syncRolloutStatus`)
onto the simulated Store, following /work/shared/k8s-rollout-spec.md section 1. One `sync` handles one
deployment key and is synchronous, so no other writer can interleave with it; every write carries the
resourceVersion it read (`expect_rv`) and a lost race (409) is left to the manager to requeue.

Writes mirror the real API calls:

* "UpdateStatus" of the Deployment: the object as read with a new `status` and possibly the
  `deployment.kubernetes.io/revision` annotation; spec and generation untouched (the /status split).
* "Update" of a ReplicaSet (scaling, annotations, `minReadySeconds`): `metadata.generation` is bumped
  when the spec changed, as the API server's strategy would, because the Store does no strategy work.
* Create/Delete of ReplicaSets; Events from `deployment-controller`.

Not implemented: the legacy `deprecated.deployment.rollback.to` server-side rollback (kubectl does not
use it; the annotation is ignored) and the alpha `terminatingReplicas` status field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from daemon.clock import Clock
from sim.controllers.events import NORMAL, WARNING, EventRecorder
from sim.controllers.hashing import (
    POD_TEMPLATE_HASH,
    normalise,
    quick_equal,
    template_hash,
    template_without_hash,
    templates_equal,
)
from sim.controllers.kubelet import parse_time
from sim.controllers.replicaset import claim, controller_ref, is_controlled_by, owner_reference
from sim.resources import DEPLOYMENTS, PODS, REPLICASETS
from sim.store import ApiError, Obj, Store, copy_json, rfc3339
from sim.strategies import apply_defaults

__all__ = [
    "DESIRED_REPLICAS_ANNOTATION",
    "MAX_INT32",
    "MAX_REPLICAS_ANNOTATION",
    "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION",
    "ROLLBACK_TO_ANNOTATION",
    "DeploymentController",
    "max_surge",
    "max_unavailable",
    "resolve_fenceposts",
    "scaled_value",
]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
_SKIP_COPY = frozenset({LAST_APPLIED_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION,
                        DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, ROLLBACK_TO_ANNOTATION})
MAX_REVISION_HISTORY_CHARS = 2000
MAX_INT32 = 2**31 - 1

# Condition types and reasons (pkg/controller/deployment/util).
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
RS_UPDATED = "ReplicaSetUpdated"
TIMED_OUT = "ProgressDeadlineExceeded"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
FAILED_RS_CREATE = "ReplicaSetCreateError"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"

_DEFAULT_PERCENT = "25%"
_DEFAULT_HISTORY_LIMIT = 10
_DEFAULT_DEADLINE = 600

Schedule = Callable[[str, str, float], None]
log = structlog.get_logger(__name__)


# ----- small readers -----

def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _spec_replicas(obj: Mapping[str, Any]) -> int:
    """`spec.replicas` of a Deployment or ReplicaSet (1 when unset, the API default)."""
    return _int((obj.get("spec") or {}).get("replicas"), 1)


def _status_int(obj: Mapping[str, Any] | None, key: str) -> int:
    return 0 if obj is None else _int((obj.get("status") or {}).get(key))


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _revision(rs: Mapping[str, Any]) -> int | None:
    """The ReplicaSet's revision annotation: 0 when missing, None when unparsable."""
    text = _annotations(rs).get(REVISION_ANNOTATION)
    if text is None:
        return 0
    try:
        return int(text)
    except ValueError:
        return None


def _created_key(rs: Mapping[str, Any]) -> tuple[float, str]:
    stamp = rs["metadata"].get("creationTimestamp")
    return (parse_time(str(stamp)) if stamp else 0.0, rs["metadata"]["name"])


def _is_rolling(d: Mapping[str, Any]) -> bool:
    strategy = ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
    return bool(strategy == "RollingUpdate")


# ----- fenceposts -----

def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An IntOrString against `total`: an int as is, a percentage rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        return -(-percent * total // 100) if round_up else percent * total // 100
    return int(text)


def resolve_fenceposts(surge: int | str | None, unavailable: int | str | None, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers; both 0 would deadlock, so maxUnavailable becomes 1."""
    s = scaled_value(surge, desired, round_up=True)
    u = scaled_value(unavailable, desired, round_up=False)
    if s == 0 and u == 0:
        u = 1
    return s, u


def _rolling_params(d: Mapping[str, Any]) -> tuple[int | str | None, int | str | None]:
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return rolling.get("maxSurge", _DEFAULT_PERCENT), rolling.get("maxUnavailable", _DEFAULT_PERCENT)


def max_surge(d: Mapping[str, Any]) -> int:
    """The Deployment's resolved maxSurge (0 for Recreate)."""
    if not _is_rolling(d):
        return 0
    surge, unavailable = _rolling_params(d)
    return resolve_fenceposts(surge, unavailable, _spec_replicas(d))[0]


def max_unavailable(d: Mapping[str, Any]) -> int:
    """The Deployment's resolved maxUnavailable, capped at spec.replicas (0 for Recreate)."""
    replicas = _spec_replicas(d)
    if not _is_rolling(d) or replicas == 0:
        return 0
    surge, unavailable = _rolling_params(d)
    return min(resolve_fenceposts(surge, unavailable, replicas)[1], replicas)


# ----- annotations -----

def _copy_deployment_annotations(d: Mapping[str, Any], rs: Obj) -> bool:
    """Copy the Deployment's annotations (skip list aside) onto the ReplicaSet; never deletes RS keys."""
    rs_annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for key, value in _annotations(d).items():
        # As upstream: a missing RS key reads as "", so an empty-valued annotation is not copied.
        if key in _SKIP_COPY or rs_annotations.get(key, "") == value:
            continue
        rs_annotations[key] = value
        changed = True
    return changed


def _set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for key, value in ((DESIRED_REPLICAS_ANNOTATION, str(desired)), (MAX_REPLICAS_ANNOTATION, str(maximum))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed


def _replicas_annotations_need_update(rs: Mapping[str, Any], desired: int, maximum: int) -> bool:
    annotations = _annotations(rs)
    return (annotations.get(DESIRED_REPLICAS_ANNOTATION) != str(desired)
            or annotations.get(MAX_REPLICAS_ANNOTATION) != str(maximum))


def _set_new_rs_annotations(d: Mapping[str, Any], rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """Upstream's `SetNewReplicaSetAnnotations`: copied annotations, revision and revision-history."""
    changed = _copy_deployment_annotations(d, rs)
    annotations = rs["metadata"]["annotations"]
    old_text = annotations.get(REVISION_ANNOTATION)
    try:
        old_revision = int(old_text) if old_text else 0
    except ValueError:
        return False
    if old_revision < new_revision:
        annotations[REVISION_ANNOTATION] = str(new_revision)
        changed = True
        # It already had a revision, so this is a rollback to it: keep the old number in the history.
        if old_text is not None:
            history = annotations.get(REVISION_HISTORY_ANNOTATION, "")
            if not history:
                annotations[REVISION_HISTORY_ANNOTATION] = old_text
            else:
                entries = history.split(",")
                total = len(history) + len(old_text) + 1
                start = 0
                while total > MAX_REVISION_HISTORY_CHARS and start < len(entries):
                    total -= len(entries[start]) + 1
                    start += 1
                if total <= MAX_REVISION_HISTORY_CHARS:
                    annotations[REVISION_HISTORY_ANNOTATION] = ",".join([*entries[start:], old_text])
    if not exists:
        replicas = _spec_replicas(d)
        if _set_replicas_annotations(rs, replicas, replicas + max_surge(d)):
            changed = True
    return changed


def _drop_empty_annotations(obj: Obj) -> None:
    # Go omits an empty map; keep the stored JSON the same shape.
    if "annotations" in obj["metadata"] and not obj["metadata"]["annotations"]:
        del obj["metadata"]["annotations"]


# ----- conditions -----

def _get_condition(status: Mapping[str, Any], type_: str) -> Obj | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def _new_condition(type_: str, status: str, reason: str, message: str, now: float) -> Obj:
    stamp = rfc3339(now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def _set_condition(status: Obj, condition: Obj) -> None:
    """No-op for the same type+status+reason; else replace (moved last), keeping lastTransitionTime
    when the status value is unchanged."""
    current = _get_condition(status, condition["type"])
    if current is not None and current.get("status") == condition["status"] \
            and current.get("reason") == condition["reason"]:
        return
    if current is not None and current.get("status") == condition["status"]:
        condition = {**condition, "lastTransitionTime": current.get("lastTransitionTime")}
    status["conditions"] = [c for c in status.get("conditions") or () if c.get("type") != condition["type"]]
    status["conditions"].append(condition)


def _remove_condition(status: Obj, type_: str) -> None:
    if "conditions" in status:
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != type_]


def _has_progress_deadline(d: Mapping[str, Any]) -> bool:
    deadline = (d.get("spec") or {}).get("progressDeadlineSeconds", _DEFAULT_DEADLINE)
    return deadline is not None and int(deadline) != MAX_INT32


def _deadline(d: Mapping[str, Any]) -> int:
    return int((d.get("spec") or {}).get("progressDeadlineSeconds", _DEFAULT_DEADLINE))


def _deployment_complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    replicas = _spec_replicas(d)
    return (_int(status.get("updatedReplicas")) == replicas and _int(status.get("replicas")) == replicas
            and _int(status.get("availableReplicas")) == replicas
            and _int(status.get("observedGeneration")) >= _int(d["metadata"].get("generation")))


def _deployment_progressing(d: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = d.get("status") or {}

    def get(s: Mapping[str, Any], key: str) -> int:
        return _int(s.get(key))

    old_old = get(old, "replicas") - get(old, "updatedReplicas")
    new_old = get(new, "replicas") - get(new, "updatedReplicas")
    return (get(new, "updatedReplicas") > get(old, "updatedReplicas") or new_old < old_old
            or get(new, "readyReplicas") > get(old, "readyReplicas")
            or get(new, "availableReplicas") > get(old, "availableReplicas"))


def _deployment_timed_out(d: Mapping[str, Any], new: Mapping[str, Any], now: float) -> bool:
    if not _has_progress_deadline(d):
        return False
    cond = _get_condition(new, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    last = cond.get("lastUpdateTime")
    return last is not None and parse_time(str(last)) + _deadline(d) < now


# ----- the controller -----

class DeploymentController:
    """Reconciles Deployments; `sync(namespace, name)` is one pass for one key."""

    def __init__(self, store: Store, clock: Clock, *, schedule: Schedule) -> None:
        self.store = store
        self.clock = clock
        self.schedule = schedule
        self.events = EventRecorder(store, clock, "deployment-controller")

    def sync(self, namespace: str, name: str) -> None:
        try:
            d = self.store.get(DEPLOYMENTS, namespace, name)
        except ApiError as err:
            if err.code == 404:
                return  # deleted: the garbage collector removes its ReplicaSets
            raise
        _DeploymentSync(self, d).run()


class _DeploymentSync:
    """One pass over one Deployment; `self.d` is always the latest stored copy this pass wrote or read."""

    def __init__(self, controller: DeploymentController, d: Obj) -> None:
        self.ctl = controller
        self.store = controller.store
        self.d = d
        self.namespace: str = d["metadata"]["namespace"]
        self.name: str = d["metadata"]["name"]

    # ----- entry -----

    def run(self) -> None:
        d = self.d
        selector = (d.get("spec") or {}).get("selector") or {}
        if not normalise(selector):
            self.event(WARNING, "SelectingAll",
                       "This deployment is selecting all pods. A non-empty selector is required.")
            status = d.setdefault("status", {})
            if _int(status.get("observedGeneration")) < _int(d["metadata"].get("generation")):
                status["observedGeneration"] = d["metadata"]["generation"]
                self.update_status()
            return
        self.claim_replicasets()
        if d["metadata"].get("deletionTimestamp"):
            new_rs, _ = self.get_all_rss_and_sync_revision(create=False)
            self.sync_deployment_status(new_rs)
            return
        self.check_paused_conditions()
        if (self.d.get("spec") or {}).get("paused"):
            self.sync_scale()
            return
        if self.is_scaling_event():
            self.sync_scale()
            return
        if _is_rolling(self.d):
            self.rollout_rolling()
        else:
            self.rollout_recreate()

    # ----- reads and writes -----

    def now(self) -> float:
        return self.ctl.clock.now()

    def event(self, type_: str, reason: str, message: str) -> None:
        self.ctl.events.event(self.d, type_, reason, message)

    def update_status(self) -> None:
        """UpdateStatus: `self.d` as read plus its new status/annotations (spec and generation unchanged)."""
        meta = self.d["metadata"]
        _drop_empty_annotations(self.d)
        self.d = self.store.replace(DEPLOYMENTS, self.d, namespace=self.namespace, name=self.name,
                                    expect_rv=meta["resourceVersion"])

    def claim_replicasets(self) -> None:
        candidates, _ = self.store.list_objects(REPLICASETS, self.namespace)
        claim(self.store, REPLICASETS, self.d, self.d["spec"]["selector"], candidates)

    def owned_rss(self) -> list[Obj]:
        """Private copies of the ReplicaSets this Deployment controls, as stored now."""
        return [copy_json(rs) for rs in self.stored_owned_rss()]

    def stored_owned_rss(self) -> list[Obj]:
        """The stored ReplicaSets (read-only!) this Deployment controls, sorted by name."""
        uid = self.d["metadata"].get("uid")
        if isinstance(uid, str):
            return self.store.controlled_by(REPLICASETS, self.namespace, uid)
        items, _ = self.store.list_objects(REPLICASETS, self.namespace)
        return [rs for rs in items if is_controlled_by(rs, self.d)]

    def fresh(self, rs: Obj | None) -> Obj | None:
        if rs is None:
            return None
        stored = self.store.peek(REPLICASETS, self.namespace, rs["metadata"]["name"])
        return copy_json(stored) if stored is not None else rs

    def write_rs(self, updated: Obj, original: Mapping[str, Any]) -> Obj:
        """Update a ReplicaSet; bump its generation if the spec changed (the API strategy's rule)."""
        if updated.get("spec") != original.get("spec"):
            updated["metadata"]["generation"] = _int(original["metadata"].get("generation"), 1) + 1
        _drop_empty_annotations(updated)
        return self.store.replace(REPLICASETS, updated, namespace=self.namespace, name=updated["metadata"]["name"],
                                  expect_rv=original["metadata"]["resourceVersion"])

    # ----- new and old ReplicaSets -----

    def find_new_rs(self, rs_list: list[Obj]) -> Obj | None:
        # `templates_equal` against each, with the Deployment's side normalised once if at all.
        template = self.d["spec"].get("template") or {}
        normalised: dict[str, Any] | None = None
        for rs in sorted(rs_list, key=_created_key):
            other = (rs.get("spec") or {}).get("template") or {}
            equal = quick_equal(other, template)
            if equal is None:
                if normalised is None:
                    normalised = template_without_hash(template)
                equal = template_without_hash(other) == normalised
            if equal:
                return rs
        return None

    def get_all_rss_and_sync_revision(self, *, create: bool) -> tuple[Obj | None, list[Obj]]:
        rs_list = self.owned_rss()
        existing = self.find_new_rs(rs_list)
        old = [rs for rs in rs_list if rs is not existing]
        return self.get_new_rs(existing, old, create=create), old

    def get_new_rs(self, existing: Obj | None, old_rss: list[Obj], *, create: bool) -> Obj | None:
        d = self.d
        max_old = max((r for r in (_revision(rs) for rs in old_rss) if r is not None), default=0)
        new_revision = max_old + 1
        if existing is not None:
            return self._sync_existing_new_rs(existing, new_revision)
        if not create:
            return None

        spec = d["spec"]
        collision_count = (d.get("status") or {}).get("collisionCount")
        pod_hash = template_hash(spec.get("template") or {}, collision_count)
        template = copy_json(spec.get("template") or {})
        template.setdefault("metadata", {})
        template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}), POD_TEMPLATE_HASH: pod_hash}
        selector = copy_json(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), POD_TEMPLATE_HASH: pod_hash}
        rs_name = f"{self.name}-{pod_hash}"
        rs_spec: Obj = {"replicas": 0, "selector": selector, "template": template}
        if spec.get("minReadySeconds"):
            rs_spec["minReadySeconds"] = spec["minReadySeconds"]
        new_rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": self.namespace,
                         "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [owner_reference(d)]},
            "spec": rs_spec,
            # What the API server answers for a new ReplicaSet (`replicas` is not omitempty).
            "status": {"replicas": 0},
        }
        apply_defaults(REPLICASETS, new_rs)  # as the API server would on this create
        new_count = self._new_rs_new_replicas([*old_rss, new_rs], new_rs)
        rs_spec["replicas"] = new_count
        _set_new_rs_annotations(d, new_rs, new_revision, exists=False)
        _drop_empty_annotations(new_rs)
        already_exists = False
        try:
            created = self.store.create(REPLICASETS, new_rs)
        except ApiError as err:
            if err.reason == "AlreadyExists":
                found = self.store.peek(REPLICASETS, self.namespace, rs_name)
                if found is not None and is_controlled_by(found, d) and templates_equal(
                        (found.get("spec") or {}).get("template"), spec.get("template")):
                    created = copy_json(found)
                    already_exists = True
                else:
                    # A hash collision: bump collisionCount so the next pass computes another name.
                    status = self.d.setdefault("status", {})
                    status["collisionCount"] = _int(status.get("collisionCount")) + 1
                    self.update_status()
                    raise
            else:
                message = f'Failed to create new replica set "{rs_name}": {err.message}'
                if _has_progress_deadline(d):
                    _set_condition(self.d.setdefault("status", {}), _new_condition(
                        PROGRESSING, "False", FAILED_RS_CREATE, message, self.now()))
                    with contextlib.suppress(ApiError):  # the bigger problem is already being reported
                        self.update_status()
                self.event(WARNING, FAILED_RS_CREATE, message)
                raise
        if not already_exists and new_count > 0:
            self.event(NORMAL, "ScalingReplicaSet", f"Scaled up replica set {rs_name} to {new_count} from 0")
        needs_update = self._set_deployment_revision(str(new_revision))
        if not already_exists and _has_progress_deadline(self.d):
            _set_condition(self.d.setdefault("status", {}), _new_condition(
                PROGRESSING, "True", NEW_RS_CREATED, f'Created new replica set "{rs_name}"', self.now()))
            needs_update = True
        if needs_update:
            self.update_status()
        return created

    def _sync_existing_new_rs(self, existing: Obj, new_revision: int) -> Obj:
        rs_copy = copy_json(existing)
        annotations_updated = _set_new_rs_annotations(self.d, rs_copy, new_revision, exists=True)
        min_ready = _int(self.d["spec"].get("minReadySeconds"))
        min_ready_update = _int(rs_copy["spec"].get("minReadySeconds")) != min_ready
        if annotations_updated or min_ready_update:
            if min_ready:
                rs_copy["spec"]["minReadySeconds"] = min_ready
            else:
                rs_copy["spec"].pop("minReadySeconds", None)
            return self.write_rs(rs_copy, existing)
        needs_update = self._set_deployment_revision(_annotations(rs_copy).get(REVISION_ANNOTATION, ""))
        if _has_progress_deadline(self.d) and _get_condition(self.d.get("status") or {}, PROGRESSING) is None:
            _set_condition(self.d.setdefault("status", {}), _new_condition(
                PROGRESSING, "True", FOUND_NEW_RS, f'Found new replica set "{rs_copy["metadata"]["name"]}"',
                self.now()))
            needs_update = True
        if needs_update:
            self.update_status()
        return rs_copy

    def _set_deployment_revision(self, revision: str) -> bool:
        annotations = self.d["metadata"].setdefault("annotations", {})
        if annotations.get(REVISION_ANNOTATION) != revision:
            annotations[REVISION_ANNOTATION] = revision
            return True
        return False

    def _new_rs_new_replicas(self, all_rss: list[Obj], new_rs: Obj) -> int:
        replicas = _spec_replicas(self.d)
        if not _is_rolling(self.d):
            return replicas
        current = sum(_spec_replicas(rs) for rs in all_rss)
        max_total = replicas + max_surge(self.d)
        if current >= max_total:
            return _spec_replicas(new_rs)
        scale_up = min(max_total - current, replicas - _spec_replicas(new_rs))
        return _spec_replicas(new_rs) + scale_up

    # ----- scaling -----

    def scale_rs(self, rs: Obj, new_scale: int, operation: str) -> tuple[bool, Obj]:
        """Set a ReplicaSet's replicas (and desired/max annotations); record an event if the size changed."""
        replicas = _spec_replicas(self.d)
        maximum = replicas + max_surge(self.d)
        size_changes = _spec_replicas(rs) != new_scale
        if not size_changes and not _replicas_annotations_need_update(rs, replicas, maximum):
            return False, rs
        old_scale = _spec_replicas(rs)
        updated = copy_json(rs)
        updated["spec"]["replicas"] = new_scale
        _set_replicas_annotations(updated, replicas, maximum)
        stored = self.write_rs(updated, rs)
        if size_changes:
            self.event(NORMAL, "ScalingReplicaSet",
                       f"Scaled {operation} replica set {rs['metadata']['name']} to {new_scale} from {old_scale}")
        return size_changes, stored

    def scale_rs_and_record(self, rs: Obj, new_scale: int) -> tuple[bool, Obj]:
        if _spec_replicas(rs) == new_scale:
            return False, rs
        return self.scale_rs(rs, new_scale, "up" if _spec_replicas(rs) < new_scale else "down")

    def is_scaling_event(self) -> bool:
        new_rs, old_rss = self.get_all_rss_and_sync_revision(create=False)
        replicas = _spec_replicas(self.d)
        for rs in _active([*old_rss, new_rs]):
            desired = _annotations(rs).get(DESIRED_REPLICAS_ANNOTATION)
            try:
                if desired is not None and int(desired) != replicas:
                    return True
            except ValueError:
                continue
        return False

    def sync_scale(self) -> None:
        """Upstream's `sync`: scaling events and paused deployments; never creates a ReplicaSet."""
        new_rs, old_rss = self.get_all_rss_and_sync_revision(create=False)
        self.scale(new_rs, old_rss)
        if (self.d.get("spec") or {}).get("paused"):
            self.cleanup(self._refresh_all(old_rss))
        self.sync_deployment_status(new_rs)

    def scale(self, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        d = self.d
        replicas = _spec_replicas(d)
        active_or_latest = self._find_active_or_latest(new_rs, old_rss)
        if active_or_latest is not None:
            if _spec_replicas(active_or_latest) != replicas:
                self.scale_rs_and_record(active_or_latest, replicas)
            return
        if self._is_saturated(new_rs):
            for old in _active(old_rss):
                self.scale_rs_and_record(old, 0)
            return
        if not _is_rolling(d):
            return
        all_rss = sorted(_active([*old_rss, new_rs]), key=_created_key)
        current_total = sum(_spec_replicas(rs) for rs in all_rss)
        allowed = replicas + max_surge(d) if replicas > 0 else 0
        to_add = allowed - current_total
        operation = ""
        if to_add > 0:
            # Larger first; among equals, newer first when scaling up.
            all_rss.sort(key=_created_key, reverse=True)
            all_rss.sort(key=lambda rs: -_spec_replicas(rs))  # stable: newer stays first among equals
            operation = "up"
        elif to_add < 0:
            # Larger first; among equals, older first when scaling down.
            all_rss.sort(key=lambda rs: (-_spec_replicas(rs), *_created_key(rs)))
            operation = "down"
        added = 0
        sizes: dict[str, int] = {}
        for rs in all_rss:
            if to_add != 0:
                proportion = self._proportion(rs, to_add, added)
                sizes[rs["metadata"]["name"]] = _spec_replicas(rs) + proportion
                added += proportion
            else:
                sizes[rs["metadata"]["name"]] = _spec_replicas(rs)
        for i, rs in enumerate(all_rss):
            name = rs["metadata"]["name"]
            if i == 0 and to_add != 0:
                sizes[name] = max(0, sizes[name] + to_add - added)
            self.scale_rs(rs, sizes[name], operation)

    def _find_active_or_latest(self, new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
        if new_rs is None and not old_rss:
            return None
        newest_first = sorted(old_rss, key=_created_key, reverse=True)
        active = _active([*newest_first, new_rs])
        if not active:
            return new_rs if new_rs is not None else newest_first[0]
        if len(active) == 1:
            return active[0]
        return None

    def _is_saturated(self, rs: Obj | None) -> bool:
        if rs is None:
            return False
        try:
            desired = int(_annotations(rs).get(DESIRED_REPLICAS_ANNOTATION, ""))
        except ValueError:
            return False
        replicas = _spec_replicas(self.d)
        return (_spec_replicas(rs) == replicas and desired == replicas
                and _status_int(rs, "availableReplicas") == replicas)

    def _proportion(self, rs: Obj, to_add: int, added: int) -> int:
        if _spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
            return 0
        fraction = self._fraction(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def _fraction(self, rs: Obj) -> int:
        d = self.d
        replicas = _spec_replicas(d)
        if replicas == 0:
            return -_spec_replicas(rs)
        max_replicas = replicas + max_surge(d)
        try:
            before = int(_annotations(rs).get(MAX_REPLICAS_ANNOTATION, ""))
        except ValueError:
            before = 0
        if before == 0:
            # No usable annotation (hand-edited, or scaled from zero): fall back to the current size.
            before = _status_int(d, "replicas") or replicas
        new_size = _spec_replicas(rs) * max_replicas / before
        return _round_half_away(new_size) - _spec_replicas(rs)

    # ----- rolling update -----

    def rollout_rolling(self) -> None:
        new_rs, old_rss = self.get_all_rss_and_sync_revision(create=True)
        assert new_rs is not None
        all_rss = [*old_rss, new_rs]
        scaled_up, new_rs = self.reconcile_new_rs(all_rss, new_rs)
        if scaled_up:
            self.sync_rollout_status(new_rs)
            return
        if self.reconcile_old_rss([*old_rss, new_rs], _active(old_rss), new_rs):
            self.sync_rollout_status(new_rs)
            return
        if _deployment_complete(self.d, self.d.get("status") or {}):
            self.cleanup(self._refresh_all(old_rss))
        self.sync_rollout_status(new_rs)

    def reconcile_new_rs(self, all_rss: list[Obj], new_rs: Obj) -> tuple[bool, Obj]:
        replicas = _spec_replicas(self.d)
        if _spec_replicas(new_rs) == replicas:
            return False, new_rs
        if _spec_replicas(new_rs) > replicas:
            return self.scale_rs_and_record(new_rs, replicas)
        return self.scale_rs_and_record(new_rs, self._new_rs_new_replicas(all_rss, new_rs))

    def reconcile_old_rss(self, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj) -> bool:
        old_count = sum(_spec_replicas(rs) for rs in old_rss)
        if old_count == 0:
            return False
        all_count = sum(_spec_replicas(rs) for rs in all_rss)
        min_available = _spec_replicas(self.d) - max_unavailable(self.d)
        new_unavailable = _spec_replicas(new_rs) - _status_int(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        old_rss, cleaned = self.cleanup_unhealthy_replicas(old_rss, max_scaled_down)
        scaled_down = self.scale_down_old_rss_for_rolling_update([*old_rss, new_rs], old_rss)
        return cleaned + scaled_down > 0

    def cleanup_unhealthy_replicas(self, old_rss: list[Obj], max_cleanup: int) -> tuple[list[Obj], int]:
        """Scale down old ReplicaSets' unavailable replicas first, oldest first: they would block the rollout."""
        old_rss = sorted(old_rss, key=_created_key)
        total = 0
        for i, rs in enumerate(old_rss):
            if total >= max_cleanup:
                break
            replicas = _spec_replicas(rs)
            available = _status_int(rs, "availableReplicas")
            if replicas == 0 or replicas == available:
                continue
            count = min(max_cleanup - total, replicas - available)
            _, old_rss[i] = self.scale_rs_and_record(rs, replicas - count)
            total += count
        return old_rss, total

    def scale_down_old_rss_for_rolling_update(self, all_rss: list[Obj], old_rss: list[Obj]) -> int:
        min_available = _spec_replicas(self.d) - max_unavailable(self.d)
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rss)
        if available <= min_available:
            return 0
        total_to_scale = available - min_available
        total = 0
        for rs in sorted(old_rss, key=_created_key):
            if total >= total_to_scale:
                break
            if _spec_replicas(rs) == 0:
                continue
            count = min(_spec_replicas(rs), total_to_scale - total)
            self.scale_rs_and_record(rs, _spec_replicas(rs) - count)
            total += count
        return total

    # ----- recreate -----

    def rollout_recreate(self) -> None:
        new_rs, old_rss = self.get_all_rss_and_sync_revision(create=False)
        scaled_down = False
        for rs in _active(old_rss):
            scaled, _ = self.scale_rs_and_record(rs, 0)
            scaled_down = scaled_down or scaled
        if scaled_down:
            self.sync_rollout_status(new_rs)
            return
        if self._old_pods_running(new_rs, self._refresh_all(old_rss)):
            self.sync_rollout_status(new_rs)
            return
        if new_rs is None:
            new_rs, old_rss = self.get_all_rss_and_sync_revision(create=True)
            assert new_rs is not None
        self.scale_rs_and_record(new_rs, _spec_replicas(self.d))
        if _deployment_complete(self.d, self.d.get("status") or {}):
            self.cleanup(self._refresh_all(old_rss))
        self.sync_rollout_status(new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
        if sum(_status_int(rs, "replicas") for rs in old_rss) > 0:
            return True
        new_uid = new_rs["metadata"].get("uid") if new_rs is not None else None
        owner_uids = {rs["metadata"].get("uid") for rs in self.owned_rss()} - {new_uid}
        pods, _ = self.store.list_objects(PODS, self.namespace)
        for pod in pods:
            ref = controller_ref(pod)
            if ref is None or ref.get("uid") not in owner_uids:
                continue
            # Terminating pods count: Recreate promises no old and new pods at the same time.
            if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded", "Unknown"):
                return True
        return False

    # ----- history -----

    def cleanup(self, old_rss: list[Obj]) -> None:
        """Delete the oldest old ReplicaSets beyond `revisionHistoryLimit` that are scaled to zero."""
        limit = (self.d.get("spec") or {}).get("revisionHistoryLimit", _DEFAULT_HISTORY_LIMIT)
        if limit is None or int(limit) == MAX_INT32:
            return
        alive = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        diff = len(alive) - int(limit)
        if diff <= 0:
            return
        alive.sort(key=lambda rs: (_revision(rs) or 0, *_created_key(rs)))
        for rs in alive[:diff]:
            if (_status_int(rs, "replicas") != 0 or _spec_replicas(rs) != 0
                    or _int(rs["metadata"].get("generation")) > _status_int(rs, "observedGeneration")):
                continue
            try:
                self.store.delete(REPLICASETS, self.namespace, rs["metadata"]["name"])
            except ApiError as err:
                if err.code != 404:
                    raise

    def _refresh_all(self, rss: Iterable[Obj]) -> list[Obj]:
        return [f for f in (self.fresh(rs) for rs in rss) if f is not None]

    # ----- status -----

    def calculate_status(self, new_rs: Obj | None) -> Obj:
        d = self.d
        all_rss = self.stored_owned_rss()  # only read
        new_name = new_rs["metadata"]["name"] if new_rs is not None else None
        fresh_new = next((rs for rs in all_rss if rs["metadata"]["name"] == new_name), None)
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rss)
        total = sum(_spec_replicas(rs) for rs in all_rss)
        counts = (
            ("observedGeneration", _int(d["metadata"].get("generation"))),
            ("replicas", sum(_status_int(rs, "replicas") for rs in all_rss)),
            ("updatedReplicas", _status_int(fresh_new, "replicas")),
            ("readyReplicas", sum(_status_int(rs, "readyReplicas") for rs in all_rss)),
            ("availableReplicas", available),
            ("unavailableReplicas", max(0, total - available)),
        )
        # Zero counters are omitted, as Go's `omitempty` JSON does.
        status: Obj = {key: value for key, value in counts if value}
        old = d.get("status") or {}
        if old.get("conditions"):
            status["conditions"] = copy_json(old["conditions"])
        if old.get("collisionCount") is not None:
            status["collisionCount"] = old["collisionCount"]
        now = self.now()
        if available >= _spec_replicas(d) - max_unavailable(d):
            _set_condition(status, _new_condition(AVAILABLE, "True", MIN_AVAILABLE,
                                                  "Deployment has minimum availability.", now))
        else:
            _set_condition(status, _new_condition(AVAILABLE, "False", MIN_UNAVAILABLE,
                                                  "Deployment does not have minimum availability.", now))
        return status

    def sync_deployment_status(self, new_rs: Obj | None) -> None:
        status = self.calculate_status(new_rs)
        self._write_status(status)

    def _write_status(self, status: Obj) -> None:
        if not status.get("conditions"):
            status.pop("conditions", None)
        if status == (self.d.get("status") or {}):
            return
        self.d["status"] = status
        self.update_status()

    def sync_rollout_status(self, new_rs: Obj | None) -> None:
        d = self.d
        new_status = self.calculate_status(new_rs)
        now = self.now()
        if not _has_progress_deadline(d):
            _remove_condition(new_status, PROGRESSING)
        current = _get_condition(d.get("status") or {}, PROGRESSING)
        complete_already = (_int(new_status.get("replicas")) == _int(new_status.get("updatedReplicas"))
                            and current is not None and current.get("reason") == NEW_RS_AVAILABLE)
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else None
        subject = f'ReplicaSet "{rs_name}"' if rs_name else f'Deployment "{self.name}"'
        if _has_progress_deadline(d) and not complete_already:
            if _deployment_complete(d, new_status):
                _set_condition(new_status, _new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                                          f"{subject} has successfully progressed.", now))
            elif _deployment_progressing(d, new_status):
                condition = _new_condition(PROGRESSING, "True", RS_UPDATED, f"{subject} is progressing.", now)
                # Always rewritten (unlike _set_condition) so that lastUpdateTime records the progress.
                if current is not None:
                    if current.get("status") == "True":
                        condition["lastTransitionTime"] = current.get("lastTransitionTime")
                    _remove_condition(new_status, PROGRESSING)
                _set_condition(new_status, condition)
            elif _deployment_timed_out(d, new_status, now):
                _set_condition(new_status, _new_condition(PROGRESSING, "False", TIMED_OUT,
                                                          f"{subject} has timed out progressing.", now))
        failures = self._replica_failures(new_rs)
        if failures:
            _set_condition(new_status, failures[0])
        else:
            _remove_condition(new_status, REPLICA_FAILURE)
        if not new_status.get("conditions"):
            new_status.pop("conditions", None)
        if new_status == (d.get("status") or {}):
            self._requeue_stuck(new_status)
            return
        self._write_status(new_status)

    def _replica_failures(self, new_rs: Obj | None) -> list[Obj]:
        all_rss = self.stored_owned_rss()  # only read
        fresh_new = self.fresh(new_rs)
        ordered = ([fresh_new] if fresh_new is not None else []) + all_rss
        for rs in ordered:
            found = [_rs_to_deployment_condition(c) for c in (rs.get("status") or {}).get("conditions") or ()
                     if c.get("type") == REPLICA_FAILURE]
            if found:
                return found
        return []

    def _requeue_stuck(self, new_status: Mapping[str, Any]) -> None:
        """Wake up when the progress deadline would pass, so a timeout fires without any other event."""
        d = self.d
        current = _get_condition(d.get("status") or {}, PROGRESSING)
        if not _has_progress_deadline(d) or current is None:
            return
        if _deployment_complete(d, new_status) or current.get("reason") == TIMED_OUT:
            return
        last = current.get("lastUpdateTime")
        if not last:
            return
        after = parse_time(str(last)) + _deadline(d) - self.now()
        # Upstream adds a second to stay clear of clock skew; "less than a second left" is requeued now.
        self.ctl.schedule(self.namespace, self.name, max(0.0, after) + 1.0)

    def check_paused_conditions(self) -> None:
        d = self.d
        if not _has_progress_deadline(d):
            return
        cond = _get_condition(d.get("status") or {}, PROGRESSING)
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return  # a reported lack of progress is not overwritten by a pause
        paused_condition = cond is not None and cond.get("reason") == PAUSED
        paused = bool((d.get("spec") or {}).get("paused"))
        if paused and not paused_condition:
            condition = _new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", self.now())
        elif not paused and paused_condition:
            condition = _new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", self.now())
        else:
            return
        _set_condition(d.setdefault("status", {}), condition)
        self.update_status()


def _active(rss: Iterable[Obj | None]) -> list[Obj]:
    """ReplicaSets with `spec.replicas` > 0 (upstream's `FilterActiveReplicaSets`)."""
    return [rs for rs in rss if rs is not None and _spec_replicas(rs) > 0]


def _round_half_away(value: float) -> int:
    """Go's `math.Round`: halves away from zero (Python's round() rounds halves to even)."""
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def _rs_to_deployment_condition(cond: Mapping[str, Any]) -> Obj:
    return {"type": cond.get("type"), "status": cond.get("status"),
            "lastUpdateTime": cond.get("lastTransitionTime"), "lastTransitionTime": cond.get("lastTransitionTime"),
            "reason": cond.get("reason", ""), "message": cond.get("message", "")}
