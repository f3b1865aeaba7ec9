"""What a rollout is, computed from the Deployment and its ReplicaSets: pure functions, no I/O.

* `build_rollout` — the revision being rolled out under a policy, with the template variables of
  the new revision and of the previous one (for baselines);
* `classify` — what a new rollout is: a fresh deploy, rollguard's own rollback, someone else's undo,
  or a re-apply of a template rollguard rolled back before;
* `started_at` — when it started (the new ReplicaSet's creation, unless the ReplicaSet is re-used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from daemon.kube.rollout_state import (
    POD_TEMPLATE_HASH,
    RolloutId,
    epoch,
    new_replica_set,
    previous_replica_set,
    revision_of,
    without_hash_label,
)
from daemon.kube.state import AnalysisState
from daemon.measurement import SignalContext
from daemon.rules.model import RollbackPolicy

Obj = Mapping[str, Any]
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"


@dataclass(frozen=True)
class Rollout:
    """A rollout being analysed: which revision, under which policy, measured how."""

    id: RolloutId
    policy: RollbackPolicy
    ctx: SignalContext
    """Template variables of the new revision."""
    baseline_ctx: SignalContext | None
    """Template variables of the previous revision (None for a first deploy)."""
    started_at: float
    """When the rollout started, epoch seconds."""
    images: tuple[str, ...] = ()
    """The new revision's container images, for people reading the alerts."""
    uid: str = ""
    """The Deployment's UID (Events name it, so `kubectl describe` finds them)."""

    @property
    def hash(self) -> str:
        return self.id.pod_template_hash or ""

    @property
    def key(self) -> tuple[str, str]:
        """The Deployment: (namespace, name)."""
        return self.id.namespace, self.id.name


class RolloutKind(StrEnum):
    """How a new rollout came about."""

    FRESH = "fresh"
    """A new template: announced and analysed."""
    OWN_ROLLBACK = "own-rollback"
    """rollguard's undo of the revision it is rolling back: followed to completion, not analysed."""
    UNDO_BY_SOMEONE = "undo-by-someone"
    """An earlier revision's template came back (`kubectl rollout undo`): announced, not analysed."""
    REAPPLIED = "reapplied"
    """A template rollguard rolled back before came back: paged for review, analysed with rollback
    capped at review, so it cannot flap."""


def is_reused(replica_set: Obj | None) -> bool:
    """Whether the controller re-used an older ReplicaSet for this revision (an undo)."""
    annotations = ((replica_set or {}).get("metadata") or {}).get("annotations") or {}
    return REVISION_HISTORY in annotations


def started_at(deployment: Obj, replica_sets: Sequence[Obj], *, now: float) -> float:
    """When the current rollout started: its ReplicaSet's creation (never later than `now`), or `now`
    for a re-used ReplicaSet (its creation is the older revision's)."""
    rs = new_replica_set(deployment, replica_sets)
    if rs is None or is_reused(rs):
        return now
    created = epoch((rs.get("metadata") or {}).get("creationTimestamp"))
    return now if created is None else min(now, created)


def build_rollout(deployment: Obj, replica_sets: Sequence[Obj], identity: RolloutId, policy: RollbackPolicy,
                  started: float) -> Rollout:
    """The rollout of `identity` under `policy`, with the previous revision's template variables."""
    meta = deployment.get("metadata") or {}
    name = str(meta.get("name", ""))
    template = without_hash_label((deployment.get("spec") or {}).get("template") or {})
    labels = {str(k): str(v) for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()}
    hash_ = identity.pod_template_hash or ""
    ctx = SignalContext(namespace=str(meta.get("namespace", "")), deployment=name, revision=identity.revision,
                        pod_template_hash=hash_, pod_prefix=f"{name}-{hash_}-", labels=labels,
                        rollout_started_at=started)
    baseline_ctx = None
    previous = previous_replica_set(deployment, replica_sets)
    if previous is not None:
        prev_hash = str(((previous.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))
        baseline_ctx = replace(ctx, revision=revision_of(previous) or 0, pod_template_hash=prev_hash,
                               pod_prefix=f"{name}-{prev_hash}-")
    images = tuple(str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or [])
    return Rollout(identity, policy, ctx, baseline_ctx, started, images, str(meta.get("uid", "")))


def classify(identity: RolloutId, *, new_rs: Obj | None, state: AnalysisState,
             rolling_back: RolloutId | None) -> RolloutKind:
    """What a newly seen rollout is.

    `rolling_back` is the revision rollguard is rolling back right now (from memory, or from the
    state annotation after a restart); `state` carries the Deployment-wide memory of rollbacks.
    """
    hash_ = identity.pod_template_hash or ""
    if rolling_back is not None and rolling_back.pod_template_hash != hash_ and _is_older(new_rs, rolling_back):
        return RolloutKind.OWN_ROLLBACK
    if state.was_rolled_back(hash_) is not None:
        return RolloutKind.REAPPLIED
    if is_reused(new_rs):
        return RolloutKind.UNDO_BY_SOMEONE
    return RolloutKind.FRESH


def _is_older(new_rs: Obj | None, bad: RolloutId) -> bool:
    """Whether `new_rs` is an older ReplicaSet brought back, as every undo's is — re-used (renumbered)
    or, before the controller renumbers it, numbered below the bad revision. A template deployed by
    someone else while rollguard rolls back gets a new ReplicaSet numbered after it: not the undo."""
    if new_rs is None:
        return False
    if is_reused(new_rs):
        return True
    revision = revision_of(new_rs)
    return revision is not None and revision < bad.revision


def rolling_back_from_state(state: AnalysisState, identity: RolloutId) -> RolloutId | None:
    """The revision a persisted, unfinished rollback was undoing, when the live template is another one
    (the undo landed): after a restart this is how rollguard recognises its own rollback's rollout."""
    if state.phase != "rolling-back" or state.revision is None or not state.pod_template_hash:
        return None
    if state.rollback is not None and state.rollback.step not in ("undo", "following"):
        return None
    if state.rollback is None and state.was_rolled_back(state.pod_template_hash) is None:
        return None  # a version-1 state (before rollback steps were recorded): the undo is in its memory
    if state.pod_template_hash == identity.pod_template_hash:
        return None
    return RolloutId(identity.namespace, identity.name, state.revision, state.pod_template_hash)
