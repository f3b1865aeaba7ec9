"""The rollout lifecycle: one explicit, pure state machine (no I/O).

Every change of a rollout's stage goes through `transition(stage, event)`, which returns the next
stage and what must be announced. The table below is the whole of it; the README prints the same
table (`render_table()`, checked by a test), so an SRE can predict what rollguard does in every case.

    analysing ──rollback rule fires──▶ rolling-back ──undo written──▶ (following) ──its rollout completes──▶ rolled-back
        │  └──review rule fires──▶ review ──approved──▶ rolling-back        └──its rollout fails──▶ rollback-failed
        │                            └──denied──▶ denied
        ├──bake time over, nothing pending──▶ passed
        ├──progress deadline exceeded──▶ failed ──policy onFailure──▶ rolling-back | review | (stays failed)
        └──a newer rollout starts──▶ superseded
    rolling-back ──a newer revision is live──▶ fenced · ──job failed / no history / API refused──▶ rollback-failed
                 ──rollback cap reached──▶ review

Terminal stages are announced once each (the state annotation records what was announced, so a
restart re-sends only what had not been sent; PagerDuty's dedup key makes a repeat one incident).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """Where a rollout stands in rollguard's lifecycle (the `phase` of the state annotation)."""

    ANALYSING = "analysing"
    REVIEW = "review"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    PASSED = "passed"
    DENIED = "denied"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    FENCED = "fenced"


TERMINAL = frozenset({Stage.ROLLED_BACK, Stage.ROLLBACK_FAILED, Stage.PASSED, Stage.DENIED, Stage.SUPERSEDED,
                      Stage.FENCED})
"""Stages after which rollguard no longer judges the revision."""

LIVE = frozenset({Stage.ANALYSING, Stage.REVIEW})
"""Stages with an analysis running (in review, later rollback rules still act)."""


class Event(StrEnum):
    """What can happen to a rollout."""

    ROLLBACK_RULE = "a rollback rule fires"
    REVIEW_RULE = "a review rule fires (or data is missing and the rule says hold)"
    BAKE_OVER = "bake time over, no rule pending or unjudged"
    DEADLINE = "the rollout exceeds its progress deadline"
    ON_FAILURE_ROLLBACK = "policy onFailure: rollback"
    ON_FAILURE_REVIEW = "policy onFailure: review"
    APPROVED = "a human approves the rollback of this revision"
    DENIED = "a human denies the rollback of this revision"
    NEWER_ROLLOUT = "a newer rollout of the Deployment starts"
    CAP_REACHED = "the rollback cap is reached"
    JOB_FAILED = "the pre-rollback Job fails"
    UNDO_WRITTEN = "the undo is written"
    UNDO_REFUSED = "the undo is refused (no history, paused, API error)"
    FENCED = "a newer revision is live when the undo is written"
    ROLLBACK_COMPLETE = "the rollback's own rollout completes"
    ROLLBACK_ROLLOUT_FAILED = "the rollback's own rollout exceeds its deadline"


@dataclass(frozen=True)
class Transition:
    """One row of the table."""

    sources: frozenset[Stage]
    event: Event
    target: Stage
    announce: str | None
    """The alert kind sent (`daemon.notify.AlertKind` value), or None."""
    pages: bool
    """Whether PagerDuty is triggered (by the default routes)."""


def _row(sources: set[Stage], event: Event, target: Stage, announce: str | None, pages: bool) -> Transition:
    return Transition(frozenset(sources), event, target, announce, pages)


_JUDGED = {Stage.ANALYSING, Stage.REVIEW}
TABLE: tuple[Transition, ...] = (
    _row({Stage.ANALYSING}, Event.BAKE_OVER, Stage.PASSED, "rollout_complete", False),
    _row(_JUDGED, Event.ROLLBACK_RULE, Stage.ROLLING_BACK, None, False),
    _row({Stage.ANALYSING}, Event.REVIEW_RULE, Stage.REVIEW, "review_needed", True),
    _row(_JUDGED, Event.DEADLINE, Stage.FAILED, "rollout_failed", True),
    _row({Stage.FAILED}, Event.ON_FAILURE_ROLLBACK, Stage.ROLLING_BACK, None, False),
    _row({Stage.FAILED}, Event.ON_FAILURE_REVIEW, Stage.REVIEW, "review_needed", True),
    _row({Stage.REVIEW}, Event.APPROVED, Stage.ROLLING_BACK, None, False),
    _row({Stage.REVIEW}, Event.DENIED, Stage.DENIED, "review_closed", True),
    _row(_JUDGED | {Stage.FAILED}, Event.NEWER_ROLLOUT, Stage.SUPERSEDED, "superseded", False),
    _row({Stage.ROLLING_BACK}, Event.CAP_REACHED, Stage.REVIEW, "review_needed", True),
    _row({Stage.ROLLING_BACK}, Event.JOB_FAILED, Stage.ROLLBACK_FAILED, "rollback_failed", True),
    _row({Stage.ROLLING_BACK}, Event.UNDO_REFUSED, Stage.ROLLBACK_FAILED, "rollback_failed", True),
    _row({Stage.ROLLING_BACK}, Event.FENCED, Stage.FENCED, "rollback_failed", True),
    _row({Stage.ROLLING_BACK}, Event.UNDO_WRITTEN, Stage.ROLLING_BACK, "rollback_started", True),
    _row({Stage.ROLLING_BACK}, Event.ROLLBACK_COMPLETE, Stage.ROLLED_BACK, "rollback_completed", True),
    _row({Stage.ROLLING_BACK}, Event.ROLLBACK_ROLLOUT_FAILED, Stage.ROLLBACK_FAILED, "rollback_failed", True),
)


class IllegalTransition(ValueError):
    """An event that cannot happen in a stage: a bug in the caller, never silently ignored."""


def transition(stage: Stage | str, event: Event) -> Transition:
    """The row for `event` in `stage`; raises `IllegalTransition` when there is none."""
    current = Stage(stage)
    for row in TABLE:
        if row.event is event and current in row.sources:
            return row
    raise IllegalTransition(f"{event.value!r} cannot happen in stage {current.value!r}")


def allows(stage: Stage | str, event: Event) -> bool:
    """Whether `event` has a row for `stage`."""
    try:
        transition(stage, event)
    except (IllegalTransition, ValueError):
        return False
    return True


def render_table() -> str:
    """The table as Markdown, as the README prints it."""
    lines = ["| from | event | to | announced | pages |", "|---|---|---|---|---|"]
    order = list(Stage)
    for row in TABLE:
        sources = ", ".join(s.value for s in sorted(row.sources, key=order.index))
        lines.append(f"| {sources} | {row.event.value} | {row.target.value} | {row.announce or '—'} | "
                     f"{'yes' if row.pages else 'no'} |")
    return "\n".join(lines)
