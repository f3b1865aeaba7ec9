"""Finding past rollouts: which start each source tells, and what is skipped with a note (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.kube.rollout_state import revision_of
from daemon.kube.state import AnalysisState, RollbackProgress, RolledBack
from daemon.replay.engine import not_replayable
from daemon.replay.history import find_rollouts
from daemon.rules.loader import load_rules
from sim.demo import team_alerts
from sim.demo.script import FAST, REPO_RULES, demo_timing

DEPLOYMENT: dict[str, Any] = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}


def replica_set(hash_: str, revision: int, created: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": f"web-{hash_}", "namespace": "shop", "creationTimestamp": created,
                         "labels": {"app": "web", "pod-template-hash": hash_},
                         "annotations": {"deployment.kubernetes.io/revision": str(revision), **annotations},
                         "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u1", "controller": True}]}}


def test_starts_come_from_rollguard_state_then_replica_sets_and_an_undo_from_rollguard_s_rollback() -> None:
    replica_sets = [
        # Revision 3 is rollguard's undo of revision 2: the controller re-used (and renumbered) revision 1's
        # ReplicaSet, which keeps revision 1's creation time; revision 5 is someone's undo of revision 4 back to
        # revision 2's template, which nothing recorded.
        replica_set("aaa", 3, "2026-11-30T10:00:00Z", **{"deployment.kubernetes.io/revision-history": "1"}),
        replica_set("bbb", 5, "2026-11-30T11:00:00Z", **{"deployment.kubernetes.io/revision-history": "2"}),
        replica_set("ccc", 4, "2026-11-30T12:00:00Z"),
    ]
    rolled_back = AnalysisState(revision=2, pod_template_hash="bbb", started_at=1_796_036_400.0,
                                rolled_back=(RolledBack("bbb", 2, 1_796_036_700.0),))
    state = AnalysisState(revision=4, pod_template_hash="ccc", started_at=1_796_040_030.0, completed_at=1_796_040_090.0)
    found, notes = find_rollouts(DEPLOYMENT, replica_sets, states=[state, rolled_back], until=1_796_136_000.0)
    assert [(r.revision, r.pod_template_hash, r.started_at, r.source, r.ended_at, r.completed_at, r.undo_of)
            for r in found] == [
        (1, "aaa", 1_796_032_800.0, "ReplicaSet", 1_796_036_400.0, None, None),
        (2, "bbb", 1_796_036_400.0, "rollguard state", 1_796_036_700.0, None, None),
        (3, "aaa", 1_796_036_700.0, "rollguard state", 1_796_040_030.0, None, 2),
        (4, "ccc", 1_796_040_030.0, "rollguard state", None, 1_796_040_090.0, None),
    ]
    # Each one's ReplicaSet is as it was then: revision 1's is not yet renumbered.
    assert [revision_of(r.replica_set) for r in found if r.replica_set is not None] == [1, 2, 3, 4]
    assert notes == ["shop/web revision 5: an undo re-used the ReplicaSet of revision 2, and neither rollguard's "
                     "state nor kube-state-metrics records when, so it is not replayed"]


def test_a_failure_rollguard_recorded_is_the_rollout_s_failure_time() -> None:
    failed = AnalysisState(revision=1, pod_template_hash="aaa", started_at=1_796_032_800.0, phase="failed",
                           decision={"action": "rollout_failed", "at": 1_796_032_830.5, "reason": "deadline"})
    found, _ = find_rollouts(DEPLOYMENT, [replica_set("aaa", 1, "2026-11-30T10:00:00Z")], states=[failed],
                             until=1_796_136_000.0)
    assert [(r.revision, r.failed_at, r.completed_at) for r in found] == [(1, 1_796_032_830.5, None)]
    # Once the onFailure rollback followed, the failure is in `announced` and the rollback started at once.
    rolled_back = AnalysisState(revision=1, pod_template_hash="aaa", started_at=1_796_032_800.0, phase="rolled-back",
                                announced=("rollout_started", "rollout_failed", "rollback_completed"),
                                rollback=RollbackProgress(step="done", target=0, at=1_796_032_830.7),
                                decision={"action": "rollback_completed", "at": 1_796_032_840.0, "reason": "done"})
    found, _ = find_rollouts(DEPLOYMENT, [replica_set("aaa", 1, "2026-11-30T10:00:00Z")], states=[rolled_back],
                             until=1_796_136_000.0)
    assert [(r.revision, r.failed_at) for r in found] == [(1, 1_796_032_830.7)]


def test_since_keeps_recent_rollouts_and_at_adds_a_start_the_cluster_does_not_record() -> None:
    replica_sets = [replica_set("aaa", 1, "2026-11-30T10:00:00Z"), replica_set("bbb", 2, "2026-11-30T11:00:00Z")]
    found, notes = find_rollouts(DEPLOYMENT, replica_sets, at=[1_796_038_200.0], since=1_796_036_000.0,
                                 until=1_796_136_000.0)
    assert [(r.revision, r.started_at, r.source, r.ended_at) for r in found] == [
        (2, 1_796_038_200.0, "--at", None),
    ]
    assert notes == []


def test_every_signal_that_is_not_a_prometheus_query_is_not_replayable_and_says_why(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    demo_timing(REPO_RULES, rules, FAST)
    team_alerts.add_to_policies(rules)
    loaded = load_rules([rules])
    assert not loaded.errors, loaded.errors
    assert not_replayable(loaded.policies[0]) == {
        "log_errors": "pod logs of past revisions are gone",
        "health": "an HTTP check can only be made now",
        "api": "an HTTP check can only be made now",
        "ws": "a WebSocket check can only be made now",
        "team_alerts": "the alerts Alertmanager pushed then are not kept",
    }
