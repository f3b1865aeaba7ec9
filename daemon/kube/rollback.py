"""Rolling back a Deployment exactly as `kubectl rollout undo` does, fenced against newer deploys.

The algorithm (k8s-rollout-spec section 3): list the ReplicaSets the Deployment controls; pick the
target (a given revision, or the second-highest); refuse a paused Deployment; skip when the
template already matches; otherwise send one JSON patch that replaces `spec.template` with the
target ReplicaSet's template (without its `pod-template-hash` label) and `metadata.annotations`
with the six controller-owned keys kept from the Deployment plus the target's other annotations.
The controller then re-uses the target ReplicaSet (it becomes the newest revision).

Fencing: immediately before writing, the Deployment is read again and the undo proceeds only if
its revision and template are still those the caller analysed; the patch itself starts with a
JSON-patch `test` of that read's `metadata.resourceVersion`, so a deploy that lands between the
read and the write makes the patch fail instead of being undone. A failed `test` is not a verdict:
the Deployment is read again, and only a newer revision fences; any other write (a status update,
an HPA scale, a GitOps annotation) is retried over.

`plan_undo` is pure; `undo` does the I/O.

Exceptions:

    RollbackError          nothing was written
     ├── UndoRefused       kubectl would refuse too (no history, unknown revision, paused)
     ├── RollbackFenced    the Deployment is no longer the revision that was analysed
     └── RollbackContended other writers changed it on every attempt
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.kube.client import JSON_PATCH, KubeApiError, KubeClient, api_path
from daemon.kube.rollout_state import (
    POD_TEMPLATE_HASH,
    REVISION_ANNOTATION,
    owned_replica_sets,
    revision_of,
    templates_equal,
    without_hash_label,
)

Obj = dict[str, Any]

# Annotations the Deployment controller owns; undo keeps the Deployment's values of these.
CONTROLLER_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
)


class RollbackError(Exception):
    """A rollback that was not carried out; nothing was written."""


class UndoRefused(RollbackError):
    """`kubectl rollout undo` would refuse this too; the message is kubectl's."""


class RollbackFenced(RollbackError):
    """The Deployment moved on (a newer deploy) since it was analysed; it is left alone."""

    def __init__(self, message: str, *, revision: int | None = None) -> None:
        super().__init__(message)
        self.revision = revision
        """The revision that is live instead."""


class RollbackContended(RollbackError):
    """Other writers changed the Deployment on every attempt; nothing was written."""


@dataclass(frozen=True)
class Fence:
    """What the caller analysed: the undo only proceeds while the Deployment is still this."""

    revision: int
    pod_template_hash: str


@dataclass(frozen=True)
class UndoPlan:
    """What an undo will write, or that it will skip because nothing would change."""

    deployment: str
    target_revision: int
    target_replica_set: str
    target_pod_template_hash: str
    skipped: bool
    patch: tuple[Obj, ...]
    message: str
    """kubectl's output line: `deployment.apps/web rolled back` or `... skipped rollback (...)`."""


@dataclass(frozen=True)
class UndoResult:
    plan: UndoPlan
    deployment: Obj
    """The Deployment as the server returned it after the patch (or as read, when skipped/dry run)."""
    dry_run: bool


def label_selector_text(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object as the `labelSelector` query parameter."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def plan_undo(deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
              *, to_revision: int = 0, keep_prefix: str | None = None) -> UndoPlan:
    """Decide what `kubectl rollout undo [--to-revision=N]` would do; raises `UndoRefused` like kubectl.

    `keep_prefix` (rollguard passes `rollguard.io/`): annotations with that prefix keep the
    Deployment's current values instead of the target ReplicaSet's stale copies — the one place
    where rollguard's write differs from kubectl's, so its own memory survives the undo.
    """
    name = str(deployment["metadata"]["name"])
    if to_revision < 0:
        raise UndoRefused(f"unable to find specified revision {to_revision} in history")
    owned = owned_replica_sets(deployment, replica_sets)
    by_revision: dict[int, Mapping[str, Any]] = {}
    for rs in owned:
        revision = revision_of(rs)
        if revision is not None:
            by_revision[revision] = rs
    if to_revision > 0:
        target = by_revision.get(to_revision)
        if target is None:
            raise UndoRefused(f"unable to find specified revision {to_revision} in history")
    else:
        revisions = sorted(by_revision)
        if len(revisions) < 2:
            raise UndoRefused(f'no rollout history found for deployment "{name}"')
        target = by_revision[revisions[-2]]
    target_revision = revision_of(target) or 0
    if (deployment.get("spec") or {}).get("paused"):
        raise UndoRefused("you cannot rollback a paused deployment; resume it first with "
                          "'kubectl rollout resume' and try again")
    target_template = without_hash_label(target["spec"]["template"])
    target_hash = str(((target.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))
    rs_name = str(target["metadata"]["name"])
    if templates_equal(deployment["spec"]["template"], target_template):
        return UndoPlan(name, target_revision, rs_name, target_hash, True, (),
                        f"deployment.apps/{name} skipped rollback (current template already matches "
                        f"revision {to_revision})")
    current_annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    annotations = {k: current_annotations[k] for k in CONTROLLER_ANNOTATIONS if k in current_annotations}
    for key, value in ((target.get("metadata") or {}).get("annotations") or {}).items():
        if key not in CONTROLLER_ANNOTATIONS and not (keep_prefix and key.startswith(keep_prefix)):
            annotations[key] = value
    if keep_prefix:
        annotations.update({k: v for k, v in current_annotations.items() if k.startswith(keep_prefix)})
    patch = (
        {"op": "replace", "path": "/spec/template", "value": target_template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    )
    return UndoPlan(name, target_revision, rs_name, target_hash, False, patch, f"deployment.apps/{name} rolled back")


async def list_owned_replica_sets(client: KubeClient, deployment: Mapping[str, Any]) -> list[Obj]:
    """The ReplicaSets this Deployment controls, found as kubectl finds them (selector, then owner UID)."""
    meta = deployment["metadata"]
    listing = await client.list(api_path("apps/v1", "replicasets", meta["namespace"]),
                                {"labelSelector": label_selector_text(deployment["spec"]["selector"])})
    return [dict(rs) for rs in owned_replica_sets(deployment, listing.get("items") or [])]


def current_hash(deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]) -> str | None:
    """The pod-template-hash of the ReplicaSet matching the Deployment's current template, if any."""
    for rs in owned_replica_sets(deployment, replica_sets):
        if templates_equal(rs["spec"]["template"], deployment["spec"]["template"]):
            return str(((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, "")) or None
    return None


def check_fence(namespace: str, name: str, deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
                fence: Fence) -> None:
    """Raise `RollbackFenced` unless the Deployment still runs the fenced revision and template."""
    revision = revision_of(deployment)
    live_hash = current_hash(deployment, replica_sets)
    if revision != fence.revision or live_hash != fence.pod_template_hash:
        raise RollbackFenced(
            f"deployment {namespace}/{name} is now at revision {revision} (template {live_hash}), not the "
            f"analysed revision {fence.revision} (template {fence.pod_template_hash}); not rolling back",
            revision=revision)


async def read_for_undo(client: KubeClient, namespace: str, name: str) -> tuple[Obj, list[Obj]]:
    """The Deployment and the ReplicaSets it controls, read now."""
    deployment = await client.get(api_path("apps/v1", "deployments", namespace, name))
    return deployment, await list_owned_replica_sets(client, deployment)


MAX_PRECONDITION_RETRIES = 5
"""How often a failed resourceVersion `test` is retried after a re-read that shows the fence still holds."""
FIELD_FENCED_ATTEMPTS = 3
"""Attempts after those, fenced on the fields that make the revision (template, revision annotation)
instead of the whole object's version: a Deployment that other writers touch hundreds of times a
second (a runaway controller) is still rolled back, and still never over a newer revision."""
_REVISION_POINTER = "/metadata/annotations/" + REVISION_ANNOTATION.replace("~", "~0").replace("/", "~1")


async def undo(client: KubeClient, namespace: str, name: str, *, to_revision: int = 0,
               fence: Fence | None = None, dry_run: bool = False, keep_prefix: str | None = None,
               set_annotations: Mapping[str, str] | None = None,
               before_write: Callable[[], None] | None = None) -> UndoResult:
    """Roll back like `kubectl rollout undo`, but only while the Deployment is still `fence`.

    Raises `UndoRefused` (kubectl's reasons) or `RollbackFenced` (a newer revision is live). A write
    by someone else between the read and the patch (a status update, a scale, an annotation) fails
    the patch's resourceVersion `test`; the Deployment is then read again and, while the fence still
    holds, the undo is planned and sent again (`MAX_PRECONDITION_RETRIES` times, then fenced on the
    template and revision annotation alone, `FIELD_FENCED_ATTEMPTS` times).
    With `dry_run`, the patch is sent with `dryRun=All`: validated by the server, stored nowhere.
    `set_annotations` are written by the same patch (rollguard's state: the undo and the memory of it
    land together or not at all, so a crash right after the undo cannot forget it).
    `before_write` is called right before each patch and may raise to stop it (the leadership check).
    """
    path = api_path("apps/v1", "deployments", namespace, name)
    attempt = 0
    while True:
        deployment, replica_sets = await read_for_undo(client, namespace, name)
        if fence is not None:
            check_fence(namespace, name, deployment, replica_sets, fence)
        plan = plan_undo(deployment, replica_sets, to_revision=to_revision, keep_prefix=keep_prefix)
        if plan.skipped:
            return UndoResult(plan, deployment, dry_run)
        rv = deployment["metadata"]["resourceVersion"]
        operations = list(plan.patch)
        if set_annotations:
            operations = [{**op, "value": {**op["value"], **set_annotations}}
                          if op["path"] == "/metadata/annotations" else op for op in operations]
        if attempt < MAX_PRECONDITION_RETRIES:
            preconditions = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
        else:
            preconditions = [{"op": "test", "path": "/spec/template", "value": deployment["spec"]["template"]},
                             {"op": "test", "path": _REVISION_POINTER,
                              "value": (deployment["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)}]
        body = [*preconditions, *operations]
        if before_write is not None:
            before_write()
        try:
            patched = await client.patch(path, body, content_type=JSON_PATCH, dry_run=dry_run)
        except KubeApiError as exc:
            # A failed `test` op is 422 on current servers (500 on some old ones); 409 is a lost race.
            lost_race = exc.code in (409, 422) or (exc.code == 500 and "test" in exc.message.lower())
            if not lost_race:
                raise
            attempt += 1
            if attempt >= MAX_PRECONDITION_RETRIES + FIELD_FENCED_ATTEMPTS:
                raise RollbackContended(
                    f"deployment {namespace}/{name} kept changing while rolling back ({attempt} attempts, last: "
                    f"{exc.code} {exc.reason}); the undo was not written") from exc
            await asyncio.sleep(random.uniform(0, 0.02 * attempt))  # let the other writer's burst pass
            continue
        return UndoResult(plan, patched, dry_run)
