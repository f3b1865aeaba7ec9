"""Which rollouts of a Deployment happened, and when: pure functions over what the cluster still records.

Sources, in the order they are trusted for a revision's start (epoch seconds):

1. `--at TIME` given on the command line (the operator knows best);
2. rollguard's own persisted state (the Deployment's state annotation and the copies the controller made
   on each ReplicaSet): the `startedAt` it recorded for that revision and template;
3. the ReplicaSet's `creationTimestamp`, for the first revision of its template: a ReplicaSet re-used
   by an undo carries the `revision-history` annotation (its earlier revisions) and keeps the creation
   time of the first; each later revision of it (a re-roll) starts when rollguard recorded its rollback
   of the revision before (the `rolledBack` list of its state), or per (2), or when kube-state-metrics
   first exported the ReplicaSet with that revision (`kube_replicaset_annotations`);
4. `kube_replicaset_created` from kube-state-metrics, for ReplicaSets the controller has pruned
   (`revisionHistoryLimit`): records made by `daemon.replay.ksm`, numbered from
   `kube_replicaset_annotations` when kube-state-metrics exports the revision annotation, else 0.

A revision whose start none of them tells is skipped with a note, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH, epoch, revision_of
from daemon.kube.state import AnalysisState
from daemon.replay.ksm import KSM, from_ksm
from daemon.rollout import REVISION_HISTORY

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class PastRollout:
    """One past rollout of a Deployment: which revision, when it started and until when it was current."""

    namespace: str
    deployment: str
    revision: int
    """The revision number (0 when only kube-state-metrics remembers the ReplicaSet)."""
    pod_template_hash: str
    started_at: float
    """When the rollout started, epoch seconds."""
    source: str
    """What told the start: `--at`, `rollguard state`, `ReplicaSet`, `kube-state-metrics`."""
    replica_set: Obj | None = None
    """The ReplicaSet, when it still exists (its pod template gives the labels and images)."""
    ended_at: float | None = None
    """When the next rollout started (the daemon stops analysing a replaced revision), None for the latest."""
    completed_at: float | None = None
    """When rollguard recorded the rollout complete, if it did; None: not recorded."""
    failed_at: float | None = None
    """When rollguard recorded the rollout failed (its progress deadline passed), if it did."""
    undo_of: int | None = None
    """The revision rollguard rolled back to make this one (its own undo, which the daemon does not judge)."""

    @property
    def images(self) -> tuple[str, ...]:
        """The container images of the revision ("" when the ReplicaSet is gone)."""
        spec = (((self.replica_set or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        return tuple(str(c.get("image", "")) for c in spec.get("containers") or [])


def _hash(rs: Obj) -> str:
    return str(((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))


def revisions_of(rs: Obj) -> list[int]:
    """Every revision a ReplicaSet has been, oldest first: its `revision-history` (set when an undo re-used it),
    then its current revision."""
    annotations = (rs.get("metadata") or {}).get("annotations") or {}
    current = revision_of(rs)
    earlier = [int(r) for r in str(annotations.get(REVISION_HISTORY, "")).split(",") if r.strip().isdigit()]
    return sorted({*earlier, *([current] if current is not None else [])})


def as_revision(rs: Obj, revision: int) -> Obj:
    """`rs` as it was while it was `revision` (its annotations then)."""
    meta = dict(rs.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != REVISION_HISTORY}
    annotations["deployment.kubernetes.io/revision"] = str(revision)
    return {**rs, "metadata": {**meta, "annotations": annotations}}


@dataclass(frozen=True)
class Recorded:
    """What rollguard's persisted states say about one revision of a template."""

    started_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None


def recorded_starts(states: Iterable[AnalysisState]) -> dict[tuple[int, str], Recorded]:
    """(revision, hash) → its start, completion and failure, from rollguard's persisted states."""
    found: dict[tuple[int, str], Recorded] = {}
    for state in states:
        if state.revision is None or not state.pod_template_hash or state.started_at is None:
            continue
        key = (state.revision, state.pod_template_hash)
        known = found.get(key, Recorded())
        failed = _failed_at(state)
        found[key] = Recorded(
            known.started_at if known.started_at is not None else state.started_at,
            known.completed_at if known.completed_at is not None else state.completed_at,
            known.failed_at if known.failed_at is not None else failed)
    return found


def _failed_at(state: AnalysisState) -> float | None:
    """When the state's rollout failed (its progress deadline passed), if it says so.

    The decision tells while it is the latest; once the `onFailure` rollback followed (at once), the
    failure is only in `announced`, and the rollback's start is its time."""
    decision = state.decision or {}
    at = decision.get("at")
    if decision.get("action") == "rollout_failed" and isinstance(at, int | float):
        return float(at)
    if "rollout_failed" in state.announced and state.rollback is not None and state.rollback.at:
        return state.rollback.at
    return None


def rollbacks(states: Iterable[AnalysisState]) -> dict[int, float]:
    """Revision → when rollguard rolled it back (its undo started the next revision then)."""
    found: dict[int, float] = {}
    for state in states:
        for entry in state.rolled_back:
            found.setdefault(entry.revision, entry.at)
    return found


def unrecorded_rerolls(replica_sets: Sequence[Obj], states: Iterable[AnalysisState]) -> list[tuple[str, int]]:
    """(ReplicaSet name, revision) of each undo's re-roll whose start rollguard did not record."""
    states = list(states)
    recorded, undone = recorded_starts(states), rollbacks(states)
    found = []
    for rs in replica_sets:
        name = str((rs.get("metadata") or {}).get("name", ""))
        for revision in revisions_of(rs)[1:]:
            if (revision, _hash(rs)) not in recorded and revision - 1 not in undone:
                found.append((name, revision))
    return found


def find_rollouts(deployment: Obj, replica_sets: Sequence[Obj], *, states: Iterable[AnalysisState] = (),
                  rerolled: Mapping[tuple[str, int], float] | None = None, at: Sequence[float] = (),
                  since: float | None = None, until: float) -> tuple[list[PastRollout], list[str]]:
    """The rollouts of `deployment` that started in [`since`, `until`], oldest first, and notes on what was skipped.

    `replica_sets`: the Deployment's own ReplicaSets, and records of pruned ones from kube-state-metrics
    (`daemon.replay.ksm`); `states`: rollguard's persisted states (the Deployment's and the ReplicaSets'
    copies); `rerolled`: (ReplicaSet name, revision) → when kube-state-metrics first exported it so, for
    undos nobody recorded; `at`: start times given by the operator, which replay the revision current at
    each time."""
    meta = deployment.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    states = list(states)
    recorded = recorded_starts(states)
    undone = rollbacks(states)
    notes: list[str] = []
    found: dict[tuple[int, str], PastRollout] = {}
    for rs in replica_sets:
        hash_, revisions = _hash(rs), revisions_of(rs)
        source = KSM if from_ksm(rs) else "ReplicaSet"
        if not hash_ or not (revisions or source == KSM):
            continue
        for index, revision in enumerate(revisions or [0]):
            then = as_revision(rs, revision) if revision else rs
            known = recorded.get((revision, hash_), Recorded())
            if known.started_at is not None:
                found[revision, hash_] = PastRollout(namespace, name, revision, hash_, known.started_at,
                                                     "rollguard state", then, completed_at=known.completed_at,
                                                     failed_at=known.failed_at)
                continue
            if index == 0:
                start = epoch((rs.get("metadata") or {}).get("creationTimestamp"))
                if start is not None:
                    found[revision, hash_] = PastRollout(namespace, name, revision, hash_, start, source, then)
                    continue
            elif revision - 1 in undone:
                # rollguard's undo of the revision before made this one: it started when rollguard rolled back.
                found[revision, hash_] = PastRollout(namespace, name, revision, hash_, undone[revision - 1],
                                                     "rollguard state", then, undo_of=revision - 1)
                continue
            elif (start := (rerolled or {}).get((str((rs.get("metadata") or {}).get("name", "")), revision))) \
                    is not None:
                found[revision, hash_] = PastRollout(namespace, name, revision, hash_, start, KSM, then)
                continue
            notes.append(f"{namespace}/{name} revision {revision}: an undo re-used the ReplicaSet of revision "
                         f"{revisions[0]}, and neither rollguard's state nor kube-state-metrics records when, so "
                         "it is not replayed")
    rollouts = sorted(found.values(), key=lambda r: (r.started_at, r.revision))
    for moment in at:
        current = [r for r in rollouts if r.started_at <= moment]
        if not current:
            notes.append(f"{namespace}/{name}: no known revision was current at --at {moment:.0f}")
            continue
        chosen = current[-1]
        rollouts = [r for r in rollouts if r is not chosen]
        rollouts.append(PastRollout(namespace, name, chosen.revision, chosen.pod_template_hash, moment, "--at",
                                    chosen.replica_set))
        rollouts.sort(key=lambda r: (r.started_at, r.revision))
    ended = [replace(r, ended_at=nxt.started_at if nxt is not None else None)
             for r, nxt in zip(rollouts, [*rollouts[1:], None], strict=True)]
    selected = [r for r in ended if (since is None or r.started_at >= since) and r.started_at <= until]
    return selected, notes
