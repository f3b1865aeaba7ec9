"""Finding past rollouts: which start each source tells, and what is skipped with a note (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from daemon.kube.state import AnalysisState
from daemon.replay.history import find_rollouts

DEPLOYMENT: dict[str, Any] = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}


def replica_set(hash_: str, revision: int, created: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": f"web-{hash_}", "namespace": "shop", "creationTimestamp": created,
                         "labels": {"app": "web", "pod-template-hash": hash_},
                         "annotations": {"deployment.kubernetes.io/revision": str(revision), **annotations},
                         "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u1", "controller": True}]}}


def test_starts_come_from_rollguard_state_then_replica_sets_and_an_undo_is_skipped_with_a_note() -> None:
    replica_sets = [
        replica_set("aaa", 1, "2026-11-30T10:00:00Z"),
        replica_set("bbb", 2, "2026-11-30T11:00:00Z"),
        # Revision 3 is an undo to revision 1's template: the controller re-used (and renumbered) its ReplicaSet.
        replica_set("ccc", 4, "2026-11-30T12:00:00Z"),
        replica_set("ddd", 3, "2026-11-30T09:00:00Z", **{"deployment.kubernetes.io/revision-history": "1"}),
    ]
    state = AnalysisState(revision=4, pod_template_hash="ccc", started_at=1_796_040_030.0, completed_at=1_796_040_090.0)
    found, notes = find_rollouts(DEPLOYMENT, replica_sets, states=[state], until=1_796_136_000.0)
    assert [(r.revision, r.pod_template_hash, r.started_at, r.source, r.ended_at, r.completed_at) for r in found] == [
        (1, "aaa", 1_796_032_800.0, "ReplicaSet", 1_796_036_400.0, None),
        (2, "bbb", 1_796_036_400.0, "ReplicaSet", 1_796_040_030.0, None),
        (4, "ccc", 1_796_040_030.0, "rollguard state", None, 1_796_040_090.0),
    ]
    assert notes == ["shop/web revision 3: its ReplicaSet was re-used by an undo, so its creation time is an older "
                     "revision's, so it is not replayed"]


def test_since_keeps_recent_rollouts_and_at_adds_a_start_the_cluster_does_not_record() -> None:
    replica_sets = [replica_set("aaa", 1, "2026-11-30T10:00:00Z"), replica_set("bbb", 2, "2026-11-30T11:00:00Z")]
    found, notes = find_rollouts(DEPLOYMENT, replica_sets, at=[1_796_038_200.0], since=1_796_036_000.0,
                                 until=1_796_136_000.0)
    assert [(r.revision, r.started_at, r.source, r.ended_at) for r in found] == [
        (2, 1_796_038_200.0, "--at", None),
    ]
    assert notes == []
