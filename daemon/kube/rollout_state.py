"""Where a Deployment rollout stands, computed from the objects as the API returns them (plain JSON dicts).

Pure: no I/O. `rollout_status` reproduces `kubectl rollout status` (spec section 2) line for line,
with rollguard's phase on top; `rollout_identity` finds the revision being rolled out and its
ReplicaSet the way the Deployment controller does (spec 1.3); `previous_replica_set` finds the
revision before it, whose pods give the baselines; `is_new_rollout` says when an identity marks the
start of a new rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"


class RolloutPhase(StrEnum):
    """rollguard's reading of a rollout."""

    WAITING_SPEC = "waiting-spec"
    """The controller has not yet observed the latest spec (`generation > observedGeneration`)."""
    PROGRESSING = "progressing"
    """Replicas are being replaced."""
    COMPLETE = "complete"
    """Every replica runs the new template and is available."""
    FAILED = "failed"
    """The Progressing condition's reason is ProgressDeadlineExceeded."""
    PAUSED = "paused"
    """`spec.paused` is set and the rollout is neither complete nor failed: it will not move on its own."""


class RevisionMismatch(ValueError):
    """`rollout_status(..., revision=R)` found another revision running, as `kubectl rollout status --revision` does."""

    def __init__(self, desired: int, running: int) -> None:
        super().__init__(f"desired revision ({desired}) is different from the running revision ({running})")
        self.desired = desired
        self.running = running


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """One evaluation of a Deployment's rollout."""

    phase: RolloutPhase
    """rollguard's phase."""
    message: str
    """Exactly the line `kubectl rollout status` prints for the same object."""
    done: bool
    """True when kubectl would exit 0: rolled out."""
    failed: bool
    """True when kubectl would exit non-zero: progress deadline exceeded."""
    new_replica_set: str | None = None
    """Name of the ReplicaSet of the current template, when `replica_sets` were given and one matches."""


@dataclass(frozen=True, slots=True)
class RolloutId:
    """Which revision of which Deployment is being rolled out."""

    namespace: str
    name: str
    revision: int
    """The new ReplicaSet's revision, or the Deployment's revision annotation while there is none."""
    pod_template_hash: str | None
    """The new ReplicaSet's `pod-template-hash` label; None until the controller has created it."""


def rollout_status(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]] = (), *, revision: int = 0
) -> RolloutStatus:
    """The status `kubectl rollout status deployment/<name> [--revision=R]` would report.

    Raises `RevisionMismatch` when `revision` > 0 and the Deployment's revision annotation differs.
    """
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name", "")
    if revision > 0:
        running = _revision(metadata) or 0
        if running != revision:
            raise RevisionMismatch(revision, running)
    new_rs = _new_replica_set(deployment, replica_sets)
    new_rs_name = (new_rs.get("metadata") or {}).get("name") if new_rs is not None else None
    paused = bool(spec.get("paused"))

    def waiting(phase: RolloutPhase, message: str) -> RolloutStatus:
        return RolloutStatus(RolloutPhase.PAUSED if paused else phase, message, False, False, new_rs_name)

    if int(metadata.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return waiting(RolloutPhase.WAITING_SPEC, "Waiting for deployment spec update to be observed...")
    progressing = next((c for c in status.get("conditions") or () if c.get("type") == "Progressing"), None)
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return RolloutStatus(
            RolloutPhase.FAILED, f'deployment "{name}" exceeded its progress deadline', False, True, new_rs_name
        )
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    desired = spec.get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if desired is not None and updated < int(desired):
        return waiting(
            RolloutPhase.PROGRESSING, f"{prefix}{updated} out of {desired} new replicas have been updated..."
        )
    if replicas > updated:
        return waiting(
            RolloutPhase.PROGRESSING, f"{prefix}{replicas - updated} old replicas are pending termination..."
        )
    if available < updated:
        return waiting(RolloutPhase.PROGRESSING, f"{prefix}{available} of {updated} updated replicas are available...")
    return RolloutStatus(
        RolloutPhase.COMPLETE, f'deployment "{name}" successfully rolled out', True, False, new_rs_name
    )


def rollout_identity(deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]) -> RolloutId:
    """The revision being rolled out: its new ReplicaSet's revision and pod-template-hash, or, before
    the controller created that ReplicaSet, the Deployment's revision annotation and no hash."""
    metadata = deployment.get("metadata") or {}
    new_rs = _new_replica_set(deployment, replica_sets)
    if new_rs is None:
        return RolloutId(metadata.get("namespace", ""), metadata.get("name", ""), _revision(metadata) or 0, None)
    rs_metadata = new_rs.get("metadata") or {}
    pod_template_hash = (rs_metadata.get("labels") or {}).get(POD_TEMPLATE_HASH)
    revision = _revision(rs_metadata)
    if revision is None:
        revision = _revision(metadata) or 0
    return RolloutId(metadata.get("namespace", ""), metadata.get("name", ""), revision, pod_template_hash)


def previous_replica_set(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The owned ReplicaSet with the highest revision below the current one (the baseline's pods), or None."""
    current = rollout_identity(deployment, replica_sets).revision
    best: Mapping[str, Any] | None = None
    best_revision = -1
    for rs in owned_replica_sets(deployment, replica_sets):
        rs_revision = _revision(rs.get("metadata") or {})
        if rs_revision is not None and best_revision < rs_revision < current:
            best, best_revision = rs, rs_revision
    return best


def is_new_rollout(previous: RolloutId | None, current: RolloutId) -> bool:
    """True when `current` is a rollout rollguard has not seen start: a new revision with its ReplicaSet.

    `previous` None (nothing known yet, e.g. right after the daemon started) is not a rollout start;
    nor is an identity without a hash (the ReplicaSet is about to be created; the next event has it).
    A rollback by `kubectl rollout undo` is a new rollout too (a new, higher revision), which callers
    recognise by its reused pod-template-hash.
    """
    if previous is None or current.pod_template_hash is None:
        return False
    if (previous.namespace, previous.name) != (current.namespace, current.name):
        raise ValueError(f"compared rollouts of different Deployments: {previous} and {current}")
    return (previous.revision, previous.pod_template_hash) != (current.revision, current.pod_template_hash)


def _revision(metadata: Mapping[str, Any]) -> int | None:
    """The revision annotation: None when missing or unparsable (the controller skips those)."""
    text = (metadata.get("annotations") or {}).get(REVISION_ANNOTATION)
    if text is None:
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def owned_replica_sets(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """ReplicaSets whose controller ownerReference points at this Deployment (by UID)."""
    metadata = deployment.get("metadata") or {}
    uid = metadata.get("uid")
    owned = []
    for rs in replica_sets:
        rs_metadata = rs.get("metadata") or {}
        if rs_metadata.get("namespace", metadata.get("namespace")) != metadata.get("namespace"):
            continue
        for ref in rs_metadata.get("ownerReferences") or ():
            if not ref.get("controller") or ref.get("kind") != "Deployment":
                continue
            if (uid is not None and ref.get("uid") == uid) or (uid is None and ref.get("name") == metadata.get("name")):
                owned.append(rs)
                break
    return owned


def _new_replica_set(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The owned ReplicaSet whose template equals the Deployment's ignoring pod-template-hash; the oldest
    (creationTimestamp, then name) when several do, as the controller picks it."""
    template = (deployment.get("spec") or {}).get("template")
    matches = [
        rs
        for rs in owned_replica_sets(deployment, replica_sets)
        if templates_equal((rs.get("spec") or {}).get("template"), template)
    ]
    if not matches:
        return None

    def age(rs: Mapping[str, Any]) -> tuple[str, str]:
        rs_metadata = rs.get("metadata") or {}
        # RFC 3339 timestamps in UTC ("Z") sort correctly as strings.
        return str(rs_metadata.get("creationTimestamp") or ""), str(rs_metadata.get("name") or "")

    return min(matches, key=age)


def templates_equal(a: object, b: object) -> bool:
    """Whether two pod templates are the same version of the workload (ignoring pod-template-hash).

    Exactly `_normalised_template(a) == _normalised_template(b)`, decided cheaply when it can be: the
    normalised form is `_drop_empty` of the hash-less form, so equal hash-less forms are equal templates;
    and templates whose containers' images differ are different ones. Only what is left (the same images,
    written differently) is normalised in full, which costs a copy of both templates (at start every
    Deployment is compared with each of its ReplicaSets, twice per reconcile)."""
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return _normalised_template(a) == _normalised_template(b)
    if _without_hash(a) == _without_hash(b):
        return True
    images_a, images_b = _images(a), _images(b)
    if images_a is not None and images_b is not None and images_a != images_b:
        return False
    return _normalised_template(a) == _normalised_template(b)


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template with its labels (always present, maybe empty) minus pod-template-hash: shallow copies."""
    labels = dict(((template.get("metadata") or {}).get("labels")) or {})
    labels.pop(POD_TEMPLATE_HASH, None)
    return {**template, "metadata": {**(template.get("metadata") or {}), "labels": labels}}


def _images(template: Mapping[str, Any]) -> tuple[str | None, ...] | None:
    """Each container's image as normalising keeps it (an empty one is no image), or None when the
    containers are not plain (a list of objects with string images): no conclusion is drawn then."""
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    if not isinstance(containers, list):
        return None
    images: list[str | None] = []
    for container in containers:
        image = container.get("image") if isinstance(container, Mapping) else None
        if not isinstance(container, Mapping) or not (image is None or isinstance(image, str)):
            return None
        images.append(image or None)
    return tuple(images)


def without_hash_label(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the `pod-template-hash` label (as `kubectl rollout undo` sends it)."""
    metadata = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k != POD_TEMPLATE_HASH}
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    return {**template, "metadata": metadata}


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The revision annotation of a Deployment or ReplicaSet; None when missing or unparsable."""
    return _revision(obj.get("metadata") or {})


def _normalised_template(template: object) -> object:
    """The template without the pod-template-hash label and with null and empty values dropped, so
    that semantically equal templates (nil vs empty, as Go compares them) compare equal."""
    if not isinstance(template, Mapping):
        return None
    return _drop_empty(_without_hash(template))


def _drop_empty(value: object) -> object:
    if isinstance(value, Mapping):
        cleaned = {key: _drop_empty(item) for key, item in value.items()}
        # Go decodes an absent string field as "", so "" and absent are the same value.
        return {key: item for key, item in cleaned.items() if item not in (None, {}, [], "")}
    if isinstance(value, list | tuple):
        return [_drop_empty(item) for item in value]
    return value


def new_replica_set(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The ReplicaSet of the Deployment's current template, chosen as the controller chooses it."""
    return _new_replica_set(deployment, replica_sets)


def epoch(timestamp: object) -> float | None:
    """An RFC 3339 timestamp (`metadata.creationTimestamp`) as epoch seconds; None when absent or unreadable."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
