"""Judging approval annotations: which approvals act, and the exact reason the others are ignored."""

from __future__ import annotations

import pytest

from daemon.approval import (
    APPROVE_ANNOTATION,
    APPROVE_REVISION_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    Approval,
    Decision,
    approval_patch,
    approve_command,
    clear_approval_patch,
    deny_command,
    judge_approval,
)

A, R, B = APPROVE_ANNOTATION, APPROVE_REVISION_ANNOTATION, APPROVED_BY_ANNOTATION

# (case id, annotations, current revision, pending revision, expected approval)
CASES: list[tuple[str, dict[str, str], int, int | None, Approval | None]] = [
    ("no approval", {"other": "x"}, 7, 7, None),
    ("rollback", {A: "rollback", R: "7", B: "alice"}, 7, 7, Approval(Decision.ROLLBACK, 7, "alice")),
    ("deny", {A: "deny", R: "7", B: "alice"}, 7, 7, Approval(Decision.DENY, 7, "alice")),
    ("no approver", {A: "rollback", R: "7"}, 7, 7, Approval(Decision.ROLLBACK, 7, None)),
    ("value not understood", {A: "yes", R: "7"}, 7, 7, Approval(
        Decision.IGNORED, None, None, "rollguard.io/approve='yes' is not understood (use 'rollback' or 'deny')")),
    ("value case matters", {A: "Rollback", R: "7"}, 7, 7, Approval(
        Decision.IGNORED, None, None,
        "rollguard.io/approve='Rollback' is not understood (use 'rollback' or 'deny')")),
    ("revision missing", {A: "rollback", B: "alice"}, 7, 7, Approval(
        Decision.IGNORED, None, "alice", "an approval must name the revision it approves: "
        "rollguard.io/approve-revision is missing (the Deployment is at revision 7)")),
    ("revision not a number", {A: "rollback", R: "seven"}, 7, 7, Approval(
        Decision.IGNORED, None, None, "rollguard.io/approve-revision='seven' is not a revision number")),
    ("revision with spaces", {A: "rollback", R: " 7"}, 7, 7, Approval(
        Decision.IGNORED, None, None, "rollguard.io/approve-revision=' 7' is not a revision number")),
    ("revision in other digits", {A: "rollback", R: "\u0667"}, 7, 7, Approval(
        Decision.IGNORED, None, None, "rollguard.io/approve-revision='\u0667' is not a revision number")),
    ("revision negative", {A: "rollback", R: "-7"}, 7, 7, Approval(
        Decision.IGNORED, None, None, "rollguard.io/approve-revision='-7' is not a revision number")),
    ("older revision", {A: "rollback", R: "7"}, 8, 8, Approval(
        Decision.IGNORED, 7, None,
        "the approval is for revision 7, but the Deployment is at revision 8: a newer deploy landed")),
    ("future revision", {A: "deny", R: "9"}, 8, 8, Approval(
        Decision.IGNORED, 9, None, "the approval is for revision 9, but the Deployment is at revision 8")),
    ("no review pending", {A: "rollback", R: "7"}, 7, None, Approval(
        Decision.IGNORED, 7, None, "no review is pending for revision 7")),
    ("review for another revision", {A: "rollback", R: "7"}, 7, 6, Approval(
        Decision.IGNORED, 7, None, "no review is pending for revision 7")),
    ("deny with no review pending", {A: "deny", R: "7"}, 7, None, Approval(
        Decision.IGNORED, 7, None, "no review is pending for revision 7")),
]


@pytest.mark.parametrize(("annotations", "revision", "pending", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_judge_approval(annotations: dict[str, str], revision: int, pending: int | None,
                        expected: Approval | None) -> None:
    assert judge_approval(annotations, revision=revision, pending_revision=pending) == expected


# (case id, approved-by value, approver kept)
APPROVERS = [
    ("plain", "alice@example.com", "alice@example.com"),
    ("surrounding spaces", "  alice  ", "alice"),
    ("terminal escape", "\x1b[2Kmallory\x1b[0m", "[2Kmallory[0m"),
    ("newline", "alice\nrollback approved by bob", "alicerollback approved by bob"),
    ("right-to-left override", "ecila\u202e", "ecila"),
    ("only control characters", "\x00\x07\t", None),
    ("empty", "", None),
    ("too long", "a" * 200, "a" * 128),
]


@pytest.mark.parametrize(("raw", "kept"), [a[1:] for a in APPROVERS], ids=[a[0] for a in APPROVERS])
def test_approver_is_cleaned_and_bounded(raw: str, kept: str | None) -> None:
    approval = judge_approval({A: "rollback", R: "7", B: raw}, revision=7, pending_revision=7)
    assert approval == Approval(Decision.ROLLBACK, 7, kept)


def test_a_hostile_value_is_shown_escaped_and_bounded() -> None:
    approval = judge_approval({A: "\x1b]0;pwned\x07" + "x" * 100, R: "7"}, revision=7, pending_revision=7)
    assert approval is not None
    assert approval.problem == ("rollguard.io/approve='\\x1b]0;pwned\\x07" + "x" * 30 + "…' "
                                "is not understood (use 'rollback' or 'deny')")


@pytest.mark.parametrize(("approval", "text"), [
    (Approval(Decision.ROLLBACK, 7, "alice"), "approved by alice (self-declared)"),
    (Approval(Decision.ROLLBACK, 7, None), "approved by an unnamed approver (no rollguard.io/approved-by)"),
    (Approval(Decision.DENY, 7, "alice"), "rollback denied by alice (self-declared)"),
    (Approval(Decision.IGNORED, 7, "alice", "no review is pending for revision 7"),
     "approval by alice (self-declared) ignored: no review is pending for revision 7"),
], ids=["rollback", "unnamed", "deny", "ignored"])
def test_attribution_says_the_approver_is_self_declared(approval: Approval, text: str) -> None:
    assert approval.attribution == text


def test_commands_a_page_shows() -> None:
    assert approve_command("staging", "backend", 7) == (
        "rollguard approve staging/backend --revision 7    (or: kubectl annotate deployment/backend -n staging "
        "rollguard.io/approve=rollback rollguard.io/approve-revision=7 rollguard.io/approved-by=$USER)")
    assert deny_command("staging", "backend", 7) == (
        "rollguard deny staging/backend --revision 7    (or: kubectl annotate deployment/backend -n staging "
        "rollguard.io/approve=deny rollguard.io/approve-revision=7 rollguard.io/approved-by=$USER)")


def test_patches() -> None:
    assert approval_patch(Decision.DENY, revision=7, approver="alice") == {"metadata": {"annotations": {
        "rollguard.io/approve": "deny", "rollguard.io/approve-revision": "7", "rollguard.io/approved-by": "alice"}}}
    assert clear_approval_patch() == {"metadata": {"annotations": {
        "rollguard.io/approve": None, "rollguard.io/approve-revision": None, "rollguard.io/approved-by": None}}}
    with pytest.raises(ValueError, match="an ignored approval is never written"):
        approval_patch(Decision.IGNORED, revision=7, approver="alice")
