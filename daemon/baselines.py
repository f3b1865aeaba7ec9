"""Which revision `baseline: stable` compares with, and when: a pure choice over the ReplicaSets.

`baseline: previous` is the previous ReplicaSet at the moment the rollout started, which is
misleading when that revision barely lived (`kubectl set image` then `kubectl set env` makes one that
serves for 150 ms) or was itself bad (a rollback then a re-apply). `baseline: stable` is, in order:

1. the newest revision whose analysis *passed* (rollguard's own verdicts, from the state annotation's
   `passed` memory), matched by pod-template hash, so a template rolled back to under a new
   revision number is still found;
2. on a first install (no verdict yet), the newest older revision that served for at least
   `stableMinAge`: from its ReplicaSet's creation until the next revision started.

The query is evaluated at the moment that revision stopped being the newest (the next revision's
start, or this rollout's start), so a `rate(...[2m])` covers the two minutes it served alone
before anything replaced it. Times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH, epoch, revision_of
from daemon.kube.state import Passed
from daemon.measurement import SignalContext
from daemon.rules.durations import format_duration

NO_EARLIER = "no earlier revision to compare with"
"""Why there is no stable baseline when the Deployment has no revision before this one: a baseline that
cannot exist (`NO_BASELINE`), not one that could not be measured."""


@dataclass(frozen=True)
class StableBaseline:
    """The revision a stable baseline is measured on."""

    ctx: SignalContext
    """Template variables of that revision (its hash and pod prefix)."""
    at: float
    """When the baseline query is evaluated: when that revision stopped being the newest."""
    reason: str
    """Why this revision, for messages: "revision 3, the last that passed its analysis"."""


@dataclass(frozen=True)
class _Revision:
    revision: int
    hash: str
    created: float


def _revisions(replica_sets: Sequence[Mapping[str, Any]]) -> list[_Revision]:
    found = []
    for rs in replica_sets:
        meta = rs.get("metadata") or {}
        revision = revision_of(rs)
        hash_ = str((meta.get("labels") or {}).get(POD_TEMPLATE_HASH, ""))
        created = epoch(meta.get("creationTimestamp"))
        if revision is not None and hash_ and created is not None:
            found.append(_Revision(revision, hash_, created))
    return sorted(found, key=lambda r: r.revision)


def choose_stable(current: SignalContext, replica_sets: Sequence[Mapping[str, Any]], passed: Sequence[Passed], *,
                  started_at: float, min_age: float) -> StableBaseline | str:
    """The stable baseline of the rollout of `current` (started at `started_at`), or why there is none.

    `replica_sets`: the Deployment's own ReplicaSets; `passed`: the revisions known to have passed;
    `min_age`: seconds a revision must have served to be a baseline without a passed verdict."""
    older = [r for r in _revisions(replica_sets)
             if r.hash != current.pod_template_hash and r.revision < current.revision]

    def replaced_at(candidate: _Revision) -> float:
        # Revisions created after it and before this one replaced it; a re-used ReplicaSet keeps an older
        # creation time, which says nothing about when it served, so it is not counted.
        later = [r.created for r in older if r.revision > candidate.revision and r.created >= candidate.created]
        return min([*later, started_at])

    def chosen(candidate: _Revision, reason: str) -> StableBaseline:
        ctx = replace(current, revision=candidate.revision, pod_template_hash=candidate.hash,
                      pod_prefix=f"{current.deployment}-{candidate.hash}-")
        return StableBaseline(ctx, replaced_at(candidate), reason)

    passed_hashes = {p.hash for p in passed}
    for candidate in reversed(older):
        if candidate.hash in passed_hashes:
            return chosen(candidate, f"revision {candidate.revision}, the last that passed its analysis")
    for candidate in reversed(older):
        served = replaced_at(candidate) - candidate.created
        if served >= min_age:
            return chosen(candidate, f"revision {candidate.revision}, the last that served for "
                                     f"{format_duration(min_age)} or more (no revision has passed an analysis yet)")
    if not older:
        return NO_EARLIER
    return (f"no stable revision: none passed an analysis and none of the {len(older)} earlier revisions served "
            f"for {format_duration(min_age)} (stableMinAge)")
