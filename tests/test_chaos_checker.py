"""The checker's rule that the state annotation agrees with the last decision on record (I4)."""

from __future__ import annotations

from tests.chaos.checker import Event, state_contradiction

STARTED_5 = Event(10.0, "AnalysisStarted", "Rollout of staging/backend revision 5 started: …", 5)
REVIEW_5 = Event(10.5, "ReviewRequested", "Review a rollback of staging/backend revision 5: …", 5)
FENCED_4 = Event(11.0, "RollbackFenced", "Rollback of staging/backend revision 4 not done: superseded by revision 5: "
                 "deployment staging/backend is now at revision 5 (template 5f7c976994), not the analysed …", 4)
REVIEW_STATE_5 = {"rollout": {"revision": 5}, "phase": "review"}


def test_a_fence_announced_after_the_newer_rollout_decided_is_not_the_last_word() -> None:
    # A rollback of revision 4 whose Job was running when revision 5 landed (fault schedule seed 3).
    assert state_contradiction([STARTED_5, REVIEW_5, FENCED_4], REVIEW_STATE_5) is None


def test_any_other_late_decision_about_an_older_revision_contradicts_the_state() -> None:
    superseded_4 = Event(11.0, "AnalysisSuperseded", "Superseded: staging/backend revision 4 …", 4)
    found = state_contradiction([STARTED_5, REVIEW_5, superseded_4], REVIEW_STATE_5)
    assert found is not None
    assert found.message == (
        "the state annotation says revision 5 phase review, but the last decision was AnalysisSuperseded for "
        "revision 4"), found


def test_a_fence_naming_another_revision_still_counts() -> None:
    fenced_by_6 = Event(11.0, "RollbackFenced", "Rollback of staging/backend revision 4 not done: superseded by "
                        "revision 6: …", 4)
    assert state_contradiction([STARTED_5, REVIEW_5, fenced_by_6], REVIEW_STATE_5) is not None


def test_a_state_behind_the_last_decision_of_its_own_revision_is_reported() -> None:
    found = state_contradiction([STARTED_5, REVIEW_5], {"rollout": {"revision": 5}, "phase": "analysing"})
    assert found is not None
    assert "last decision was ReviewRequested for revision 5" in found.message
