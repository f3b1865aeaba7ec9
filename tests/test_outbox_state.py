"""The durable outbox's entries in the state annotation: written, read back strictly, carried on."""

from __future__ import annotations

import json

import pytest

from daemon.kube.owed import KINDS, MAX_OWED, QUIET, Owed, with_entry
from daemon.kube.state import STATE_ANNOTATION, AnalysisState, StateError, read_state, remembered_history
from daemon.notify.model import ROUTES, AlertKind, Channel

NOW = 1_800_000_000.0


def entry(kind: str = "review_needed", revision: int = 7, at: float = NOW - 10, **extra: object) -> Owed:
    fields: dict[str, object] = {"kind": kind, "revision": revision, "hash": "5d4f8c9b7", "at": at,
                                 "title": f"Review a rollback of staging/backend revision {revision}",
                                 "summary": "error_rate > 0.05 held for 6s", "rule": "error-rate",
                                 "action": "review", "approve": True}
    fields.update(extra)
    return Owed(**fields)  # type: ignore[arg-type]


def annotated(body: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"annotations": {STATE_ANNOTATION: json.dumps(body)}}}


def test_the_kinds_an_entry_may_name_are_the_alert_kinds() -> None:
    assert set(KINDS) == {k.value for k in AlertKind}


def test_an_entry_survives_the_annotation_and_a_newer_rollout() -> None:
    state = AnalysisState(revision=7, pod_template_hash="5d4f8c9b7", started_at=NOW - 60, phase="review",
                          outbox=(entry(),))
    back = read_state(annotated(json.loads(state.to_json())), now=NOW)
    assert back.outbox == (entry(),)
    newer = back.for_new_rollout(8, "77aa88bb9", NOW)
    assert (newer.revision, newer.phase, newer.outbox) == (8, "analysing", (entry(),))


def test_a_replica_sets_stale_copy_never_brings_an_entry_back() -> None:
    """The controller copies the annotation onto each new ReplicaSet: those copies are history, and a
    delivered announcement must not come back from them."""
    copy = annotated(json.loads(AnalysisState(revision=6, pod_template_hash="aaa", outbox=(entry(revision=6),))
                                .to_json()))
    merged = AnalysisState(revision=7, pod_template_hash="bbb").merged_memory(remembered_history([copy], now=NOW))
    assert merged.outbox == ()


def test_a_state_without_an_outbox_is_written_as_before() -> None:
    assert "outbox" not in json.loads(AnalysisState(revision=1, pod_template_hash="a").to_json())


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "page_everyone"}, "outbox[0]: kind must be one of"),
    ({"title": "x" * 201}, "outbox[0]: title must be a non-empty string of at most 200 characters"),
    ({"title": ""}, "outbox[0]: title must be a non-empty string"),
    ({"summary": 5}, "outbox[0]: summary must be a string of at most 600 characters"),
    ({"at": NOW + 3600}, "outbox[0]: at must be a finite time in epoch seconds, not in the future"),
    ({"revision": -1}, "outbox[0]: revision must be a revision number"),
    ({"approve": "yes"}, "outbox[0]: approve and warning must be true or false"),
    ({"reason": "Rolled back; rm -rf"}, "outbox[0]: reason must be an Event reason"),
])
def test_a_forged_or_broken_entry_makes_the_whole_state_invalid(change: dict[str, object], message: str) -> None:
    item = {**entry().to_dict(), **change}
    with pytest.raises(StateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_state(annotated({"v": 2, "outbox": [item]}), now=NOW)


def test_an_outbox_longer_than_rollguard_writes_is_refused() -> None:
    items = [entry(revision=r).to_dict() for r in range(MAX_OWED + 1)]
    with pytest.raises(StateError, match=f"outbox has {MAX_OWED + 1} entries"):
        read_state(annotated({"v": 2, "outbox": items}), now=NOW)


def test_adding_replaces_the_same_announcement_and_makes_room_from_slack_only_ones_first() -> None:
    entries: tuple[Owed, ...] = (entry(kind="rollout_started", revision=100),)
    for revision in range(MAX_OWED - 1):
        entries, lost = with_entry(entries, entry(revision=revision))
        assert lost == ()
    again, lost = with_entry(entries, entry(revision=3, summary="sent again"))
    assert (len(again), lost, again[-1].summary) == (MAX_OWED, (), "sent again")
    full, lost = with_entry(entries, entry(revision=99))
    assert [(e.kind, e.revision) for e in lost] == [("rollout_started", 100)], "the Slack-only entry goes first"
    fuller, lost = with_entry(full, entry(revision=98))
    assert [(e.kind, e.revision) for e in lost] == [("review_needed", 0)], "then the oldest"
    assert [e.revision for e in fuller] == [*range(1, MAX_OWED - 1), 99, 98]


def test_the_entries_dropped_first_are_the_ones_that_page_nobody() -> None:
    assert set(QUIET) == {k.value for k in AlertKind if Channel.PAGERDUTY not in ROUTES[k]}
