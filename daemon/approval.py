"""Judging a human's approval: the annotations on a Deployment, read without any I/O.

A review asks a human whether to roll back one revision. The human answers with three annotations
on the Deployment (written by `rollguard approve`/`rollguard deny` or by `kubectl annotate`):

    rollguard.io/approve=rollback|deny    roll back, or close the review without rolling back
    rollguard.io/approve-revision=7       the revision the human reviewed (required)
    rollguard.io/approved-by=alice        who answered (optional)

An approval only acts on the revision it names, and only while a review for that revision is
pending: an approval written for revision 7 never rolls back revision 8 that landed meanwhile.
Kubernetes does not record who wrote an annotation, so the approver is self-declared and is always
shown as such.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

APPROVE_ANNOTATION = "rollguard.io/approve"
APPROVE_REVISION_ANNOTATION = "rollguard.io/approve-revision"
APPROVED_BY_ANNOTATION = "rollguard.io/approved-by"

ROLLBACK_VALUE = "rollback"
DENY_VALUE = "deny"

MAX_APPROVER_CHARS = 128
"""Longest approver name kept (characters); longer values are cut, not refused."""

_SHOWN_CHARS = 40  # how much of a value that is not understood an Event message repeats
_REVISION = re.compile(r"[0-9]{1,18}")  # ASCII digits only: int() would also accept "٧" and " 7 "


class Decision(StrEnum):
    """What the daemon does with an approval."""

    ROLLBACK = "rollback"
    DENY = "deny"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Approval:
    """An approval as judged: `problem` says why it is IGNORED (None otherwise)."""

    decision: Decision
    revision: int | None
    approver: str | None
    problem: str | None = None

    @property
    def approver_text(self) -> str:
        """Who approved, marked as self-declared: "alice (self-declared)"."""
        if self.approver is None:
            return f"an unnamed approver (no {APPROVED_BY_ANNOTATION})"
        return f"{self.approver} (self-declared)"

    @property
    def attribution(self) -> str:
        """The human text for logs, Events and alerts: "approved by alice (self-declared)"."""
        if self.decision is Decision.DENY:
            return f"rollback denied by {self.approver_text}"
        if self.decision is Decision.IGNORED:
            return f"approval by {self.approver_text} ignored: {self.problem}"
        return f"approved by {self.approver_text}"


def judge_approval(annotations: Mapping[str, str], *, revision: int,
                   pending_revision: int | None) -> Approval | None:
    """Judge the approval annotations against the Deployment's current `revision` and the revision
    whose review is pending (`pending_revision`, None when no review is pending).

    Returns None when there is no approval at all.
    """
    value = annotations.get(APPROVE_ANNOTATION)
    if value is None:
        return None
    approver = clean_approver(annotations.get(APPROVED_BY_ANNOTATION))
    wanted = annotations.get(APPROVE_REVISION_ANNOTATION)

    def ignored(problem: str, named: int | None = None) -> Approval:
        return Approval(Decision.IGNORED, named, approver, problem)

    if value not in (ROLLBACK_VALUE, DENY_VALUE):
        return ignored(f"{APPROVE_ANNOTATION}={_shown(value)} is not understood "
                       f"(use '{ROLLBACK_VALUE}' or '{DENY_VALUE}')")
    if wanted is None:
        return ignored(f"an approval must name the revision it approves: {APPROVE_REVISION_ANNOTATION} "
                       f"is missing (the Deployment is at revision {revision})")
    if not _REVISION.fullmatch(wanted):
        return ignored(f"{APPROVE_REVISION_ANNOTATION}={_shown(wanted)} is not a revision number")
    named = int(wanted)
    if named != revision:
        newer = ": a newer deploy landed" if named < revision else ""
        return ignored(f"the approval is for revision {named}, but the Deployment is at revision "
                       f"{revision}{newer}", named)
    if pending_revision != revision:
        return ignored(f"no review is pending for revision {revision}", named)
    return Approval(Decision(value), named, approver)


def clean_approver(raw: str | None) -> str | None:
    """The approver name as shown: control and format characters removed (they could rewrite a
    terminal line or reorder text), surrounding spaces trimmed, at most `MAX_APPROVER_CHARS`
    characters; None when nothing is left."""
    if raw is None:
        return None
    kept = "".join(c for c in raw if unicodedata.category(c) not in ("Cc", "Cf"))
    return kept.strip()[:MAX_APPROVER_CHARS].strip() or None


def _shown(value: str) -> str:
    """A hostile annotation value made safe and short for a message: quoted, escaped, bounded."""
    cut = value[:_SHOWN_CHARS] + ("…" if len(value) > _SHOWN_CHARS else "")
    return repr(cut)


def _kubectl_annotate(namespace: str, name: str, revision: int, value: str) -> str:
    # `$USER` rather than a placeholder: the line works when pasted into a shell as it is.
    return (f"kubectl annotate deployment/{name} -n {namespace} {APPROVE_ANNOTATION}={value} "
            f"{APPROVE_REVISION_ANNOTATION}={revision} {APPROVED_BY_ANNOTATION}=$USER")


def approve_command(namespace: str, name: str, revision: int) -> str:
    """The command a review page shows to approve rolling back `revision`, with its kubectl equivalent."""
    return (f"rollguard approve {namespace}/{name} --revision {revision}    "
            f"(or: {_kubectl_annotate(namespace, name, revision, ROLLBACK_VALUE)})")


def deny_command(namespace: str, name: str, revision: int) -> str:
    """The command a review page shows to close the review of `revision` without rolling back."""
    return (f"rollguard deny {namespace}/{name} --revision {revision}    "
            f"(or: {_kubectl_annotate(namespace, name, revision, DENY_VALUE)})")


def approval_patch(decision: Decision, *, revision: int, approver: str) -> dict[str, Any]:
    """The merge patch that writes an approval (ROLLBACK or DENY) of `revision` by `approver`."""
    if decision is Decision.IGNORED:
        raise ValueError("an ignored approval is never written")
    return {"metadata": {"annotations": {APPROVE_ANNOTATION: decision.value,
                                         APPROVE_REVISION_ANNOTATION: str(revision),
                                         APPROVED_BY_ANNOTATION: approver}}}


def clear_approval_patch() -> dict[str, Any]:
    """The merge patch that removes the three approval annotations (null deletes a key)."""
    return {"metadata": {"annotations": {APPROVE_ANNOTATION: None, APPROVE_REVISION_ANNOTATION: None,
                                         APPROVED_BY_ANNOTATION: None}}}
