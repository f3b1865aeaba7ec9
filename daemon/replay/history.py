"""Which rollouts of a Deployment happened, and when: pure functions over what the cluster still records.

Sources, in the order they are trusted for a revision's start (epoch seconds):

1. `--at TIME` given on the command line (the operator knows best);
2. rollguard's own persisted state (the Deployment's state annotation and the copies the controller made
   on each ReplicaSet): the `startedAt` it recorded for that revision and template;
3. the ReplicaSet's `creationTimestamp`, unless the ReplicaSet was re-used by an undo (it then carries
   the `revision-history` annotation and its creation time is the older revision's);
4. `kube_replicaset_created` from kube-state-metrics, for ReplicaSets the controller has pruned
   (`revisionHistoryLimit`): their revision number is gone, so they are numbered by time, unknown ones 0.

A revision whose start none of them tells is skipped with a note, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH, revision_of
from daemon.kube.state import AnalysisState
from daemon.rollout import is_reused

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

    @property
    def images(self) -> tuple[str, ...]:
        """The container images of the revision ("" when the ReplicaSet is gone)."""
        spec = (((self.replica_set or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        return tuple(str(c.get("image", "")) for c in spec.get("containers") or [])


def epoch(timestamp: object) -> float | None:
    """An RFC 3339 timestamp as epoch seconds, None when absent or unreadable."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _hash(rs: Obj) -> str:
    return str(((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, ""))


def recorded_starts(states: Iterable[AnalysisState]) -> dict[tuple[int, str], tuple[float, float | None]]:
    """(revision, hash) → (startedAt, completedAt) from rollguard's persisted states."""
    found: dict[tuple[int, str], tuple[float, float | None]] = {}
    for state in states:
        if state.revision is not None and state.pod_template_hash and state.started_at is not None:
            found.setdefault((state.revision, state.pod_template_hash), (state.started_at, state.completed_at))
    return found


def find_rollouts(deployment: Obj, replica_sets: Sequence[Obj], *, states: Iterable[AnalysisState] = (),
                  created: Mapping[str, float] | None = None, at: Sequence[float] = (),
                  since: float | None = None, until: float) -> tuple[list[PastRollout], list[str]]:
    """The rollouts of `deployment` that started in [`since`, `until`], oldest first, and notes on what was skipped.

    `replica_sets`: the Deployment's own ReplicaSets; `states`: rollguard's persisted states (the
    Deployment's and the ReplicaSets' copies); `created`: `kube_replicaset_created` by pod-template
    hash; `at`: start times given by the operator, which replay the revision current at each time."""
    meta = deployment.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    recorded = recorded_starts(states)
    notes: list[str] = []
    found: dict[str, PastRollout] = {}
    for rs in replica_sets:
        revision, hash_ = revision_of(rs), _hash(rs)
        if revision is None or not hash_:
            continue
        known = recorded.get((revision, hash_))
        if known is not None:
            found[hash_] = PastRollout(namespace, name, revision, hash_, known[0], "rollguard state", rs,
                                       completed_at=known[1])
            continue
        start = epoch((rs.get("metadata") or {}).get("creationTimestamp"))
        if is_reused(rs) or start is None:
            notes.append(f"{namespace}/{name} revision {revision}: its ReplicaSet was re-used by an undo, so its "
                         "creation time is an older revision's, so it is not replayed")
            continue
        found[hash_] = PastRollout(namespace, name, revision, hash_, start, "ReplicaSet", rs)
    for hash_, start in (created or {}).items():
        if hash_ not in found:
            found[hash_] = PastRollout(namespace, name, 0, hash_, start, "kube-state-metrics")
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
    ended = [PastRollout(r.namespace, r.deployment, r.revision, r.pod_template_hash, r.started_at, r.source,
                         r.replica_set, nxt.started_at if nxt is not None else None, r.completed_at)
             for r, nxt in zip(rollouts, [*rollouts[1:], None], strict=True)]
    selected = [r for r in ended if (since is None or r.started_at >= since) and r.started_at <= until]
    return selected, notes
