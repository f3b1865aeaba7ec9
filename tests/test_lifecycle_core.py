"""The pure core of the lifecycle: the state machine's table, the state annotation's schema, the
rollout model. Plain data in, plain data out; no cluster, no loop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from daemon.kube.rollout_state import RolloutId
from daemon.kube.state import MAX_STATE_BYTES, AnalysisState, RollbackProgress, StateError, read_state
from daemon.lifecycle import TABLE, TERMINAL, Event, IllegalTransition, Stage, render_table, transition
from daemon.notify.model import ROUTES, AlertKind, Channel
from daemon.rollout import RolloutKind, classify, rolling_back_from_state, started_at

README = Path(__file__).resolve().parent.parent / "README.md"
NOW = 1_700_000_000.0

# --- the state machine ---------------------------------------------------------------------------


def test_every_row_announces_a_real_alert_kind_and_pages_exactly_when_its_routes_do() -> None:
    for row in TABLE:
        if row.announce is None:
            assert not row.pages, row
            continue
        kind = AlertKind(row.announce)
        assert row.pages == (Channel.PAGERDUTY in ROUTES[kind]), row


def test_every_terminal_stage_is_reached_by_an_announced_transition() -> None:
    """Nothing ends silently: each way into a terminal stage announces it."""
    for row in TABLE:
        if row.target in TERMINAL:
            assert row.announce is not None, f"{row.event.value} → {row.target.value} is not announced"
    reached = {row.target for row in TABLE}
    assert reached >= TERMINAL, TERMINAL - reached


def test_terminal_stages_have_no_way_out() -> None:
    for row in TABLE:
        assert not (row.sources & TERMINAL), row


@pytest.mark.parametrize(("stage", "event", "target"), [
    (Stage.ANALYSING, Event.ROLLBACK_RULE, Stage.ROLLING_BACK),
    (Stage.REVIEW, Event.ROLLBACK_RULE, Stage.ROLLING_BACK),
    (Stage.REVIEW, Event.APPROVED, Stage.ROLLING_BACK),
    (Stage.REVIEW, Event.DENIED, Stage.DENIED),
    (Stage.ROLLING_BACK, Event.FENCED, Stage.FENCED),
    (Stage.ROLLING_BACK, Event.ROLLBACK_ROLLOUT_FAILED, Stage.ROLLBACK_FAILED),
    (Stage.FAILED, Event.ON_FAILURE_ROLLBACK, Stage.ROLLING_BACK),
    (Stage.ANALYSING, Event.NEWER_ROLLOUT, Stage.SUPERSEDED),
])
def test_transitions(stage: Stage, event: Event, target: Stage) -> None:
    assert transition(stage, event).target is target


@pytest.mark.parametrize(("stage", "event"), [
    (Stage.ANALYSING, Event.APPROVED),  # nobody asked for a review
    (Stage.PASSED, Event.ROLLBACK_RULE),
    (Stage.ROLLED_BACK, Event.UNDO_WRITTEN),
    (Stage.DENIED, Event.APPROVED),
])
def test_impossible_events_are_refused_loudly(stage: Stage, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=stage.value):
        transition(stage, event)


def test_the_readme_prints_the_table_the_code_follows() -> None:
    assert render_table() in README.read_text(), "README's lifecycle table differs from daemon.lifecycle.TABLE"


# --- the state annotation ------------------------------------------------------------------------


def annotated(raw: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {"rollguard.io/state": raw}}}


def v2(**overrides: Any) -> str:
    body: dict[str, Any] = {"v": 2, "rollout": {"revision": 2, "hash": "abc", "startedAt": NOW - 60},
                            "phase": "analysing", "rules": {}, "decision": None, "completedAt": None,
                            "rollback": None, "announced": [], "rolledBack": [], "rollbackTimes": []}
    body.update(overrides)
    return json.dumps(body)


@pytest.mark.parametrize(("raw", "problem"), [
    (v2(decision="x"), "decision must be an object"),
    (v2(rules={"version": 9}), 'rules must be {"version": 1'),
    (v2(rollout={"revision": 2, "hash": "abc", "startedAt": math.nan}), "NaN is not a number"),
    (v2(rollout={"revision": 2, "hash": "abc", "startedAt": 9e18}), "in the future"),
    (v2(rollbackTimes=[1e300]), "in the future"),
    (v2(rollout={"revision": True, "hash": "abc"}), "rollout.revision must be a revision number"),
    (v2(phase="exploded"), 'phase "exploded" is not one of'),
    (v2(rolledBack=[{"hash": "h", "revision": 1, "at": 1.0}] * 21), "rolledBack has 21 entries"),
    (v2(rollback={"step": "teleport"}), 'rollback.step "teleport"'),
    (v2(announced=["x" * 300]), "announced must be a list of short strings"),
    ('{"v": 7}', "unsupported state version 7"),
    ("[" * 100_000, "more than rollguard ever writes"),
    ("{not json", "is not JSON"),
])
def test_an_invalid_state_is_refused_with_the_problem_named(raw: str, problem: str) -> None:
    with pytest.raises(StateError, match=_literal(problem)):
        read_state(annotated(raw), now=NOW)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_the_size_limit_is_checked_before_parsing() -> None:
    assert len("[" * 100_000) > MAX_STATE_BYTES


def test_version_1_is_still_read() -> None:
    raw = json.dumps({"v": 1, "rollout": {"revision": 3, "hash": "h3", "startedAt": NOW - 10},
                      "phase": "rolling-back", "rules": {}, "decision": None, "completedAt": None,
                      "rolledBack": [{"hash": "h3", "revision": 3, "at": NOW - 5}], "rollbackTimes": [NOW - 5]})
    state = read_state(annotated(raw), now=NOW)
    assert state.phase == "rolling-back"
    assert state.rollback is None
    assert state.was_rolled_back("h3") is not None


def test_the_state_round_trips() -> None:
    state = AnalysisState(revision=4, pod_template_hash="h4", started_at=NOW - 30, phase="rolling-back",
                          rollback=RollbackProgress("job", target=3, job="web-rollback-r4-h4", reason="r", at=NOW),
                          announced=("review_needed",))
    assert AnalysisState.from_json(state.to_json(), now=NOW) == state


def test_rollback_memory_is_the_union_of_every_copy() -> None:
    """A human `kubectl rollout undo` copies a ReplicaSet's older annotation back: memory must survive."""
    on_deployment = AnalysisState().remember_rollback(pod_template_hash="old", revision=2, at=NOW - 100)
    on_replicaset = on_deployment.remember_rollback(pod_template_hash="newer", revision=5, at=NOW - 10)
    merged = on_deployment.merged_memory([on_replicaset])
    assert [r.hash for r in merged.rolled_back] == ["old", "newer"]
    assert merged.rollbacks_since(NOW - 50) == 1


def test_remembering_the_same_rollback_twice_counts_it_once() -> None:
    once = AnalysisState().remember_rollback(pod_template_hash="h", revision=2, at=NOW)
    assert once.remember_rollback(pod_template_hash="h", revision=2, at=NOW + 5) == once


# --- the rollout model ---------------------------------------------------------------------------


def rs(name: str, revision: int, *, created: str = "2023-11-14T22:13:00Z", reused: bool = False) -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if reused:
        annotations["deployment.kubernetes.io/revision-history"] = "1"
    return {"metadata": {"name": f"web-{name}", "namespace": "ns", "creationTimestamp": created,
                         "labels": {"app": "web", "pod-template-hash": name}, "annotations": annotations,
                         "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u1", "controller": True}]},
            "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                                  "spec": {"containers": [{"name": "c", "image": f"web:{name}"}]}}}}


def web(image_hash: str, revision: int) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)}},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": f"web:{image_hash}"}]}}}}


IDENTITY = RolloutId("ns", "web", 3, "h3")


def test_a_new_template_is_a_fresh_deploy() -> None:
    assert classify(IDENTITY, new_rs=rs("h3", 3), state=AnalysisState(), rolling_back=None) is RolloutKind.FRESH


def test_the_rollout_of_rollguards_own_undo_is_followed() -> None:
    bad = RolloutId("ns", "web", 2, "h2")
    assert classify(IDENTITY, new_rs=rs("h3", 3, reused=True), state=AnalysisState(),
                    rolling_back=bad) is RolloutKind.OWN_ROLLBACK


def test_the_undo_is_recognised_before_its_replicaset_is_renumbered() -> None:
    bad = RolloutId("ns", "web", 2, "h2")
    assert classify(RolloutId("ns", "web", 3, "h1"), new_rs=rs("h1", 1), state=AnalysisState(),
                    rolling_back=bad) is RolloutKind.OWN_ROLLBACK


def test_a_newer_deploy_landing_while_rollguard_rolls_back_is_a_fresh_deploy_not_its_undo() -> None:
    # A brand-new template gets a brand-new ReplicaSet numbered after the bad revision: an undo never
    # does (it re-uses an older one), so the newer deploy is judged on its own instead of being
    # "followed" as if it were rollguard's rollback.
    bad = RolloutId("ns", "web", 2, "h2")
    assert classify(IDENTITY, new_rs=rs("h3", 3), state=AnalysisState(), rolling_back=bad) is RolloutKind.FRESH


def test_someone_elses_undo_is_recognised_by_its_reused_replicaset() -> None:
    assert classify(IDENTITY, new_rs=rs("h3", 3, reused=True), state=AnalysisState(),
                    rolling_back=None) is RolloutKind.UNDO_BY_SOMEONE


def test_a_template_rollguard_rolled_back_before_is_a_reapply() -> None:
    memory = AnalysisState().remember_rollback(pod_template_hash="h3", revision=2, at=NOW)
    assert classify(IDENTITY, new_rs=rs("h3", 3, reused=True), state=memory,
                    rolling_back=None) is RolloutKind.REAPPLIED


def test_a_persisted_rollback_is_recognised_after_a_restart_in_both_state_versions() -> None:
    memory = AnalysisState(revision=2, pod_template_hash="h2", phase="rolling-back").remember_rollback(
        pod_template_hash="h2", revision=2, at=NOW)
    assert rolling_back_from_state(memory, IDENTITY) == RolloutId("ns", "web", 2, "h2")
    following = AnalysisState(revision=2, pod_template_hash="h2", phase="rolling-back",
                              rollback=RollbackProgress("following"))
    assert rolling_back_from_state(following, IDENTITY) == RolloutId("ns", "web", 2, "h2")
    before_job = AnalysisState(revision=2, pod_template_hash="h2", phase="rolling-back",
                               rollback=RollbackProgress("job"))
    assert rolling_back_from_state(before_job, IDENTITY) is None, "the undo was never written"


def test_a_rollout_starts_when_its_replicaset_was_created_unless_it_is_reused() -> None:
    deployment = web("h3", 3)
    created = rs("h3", 3, created="2023-11-14T22:12:00Z")
    assert started_at(deployment, [created], now=NOW) == 1_699_999_920.0
    assert started_at(deployment, [rs("h3", 3, reused=True)], now=NOW) == NOW


def test_stages_match_the_states_the_annotation_accepts() -> None:
    from daemon.kube.state import PHASES

    assert set(PHASES) == {s.value for s in Stage}
