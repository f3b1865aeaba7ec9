"""The durable outbox's entries: announcements decided but not yet known delivered.

An entry is stored in the state annotation's `outbox` list (see `daemon.kube.state`) from the save
that records its decision until its alert settles — delivered, or given up on and counted. A
successor (a restarted daemon, or a replica that just became leader) re-sends every entry it finds,
whichever rollout the state now belongs to: a newer deploy does not wipe what the previous one still
owes. The JSON of one entry:

    {"kind": "review_needed", "revision": 7, "hash": "5d4f8c9b7", "at": 1700000123.0,
     "title": "...", "summary": "...", "rule": "error-rate" | null, "action": "review" | null,
     "approve": true, "reason": "ReviewRequested", "warning": true}

`reason` and `warning` are its Kubernetes Event's: a successor records the Event again with the
alert, since the process that decided may have died before it did.

Everything in it is bounded, and it is read back as strictly as the rest of the annotation: the
annotation is input anyone who may edit the Deployment can write.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_OWED = 20
"""Entries kept; past it one is dropped (logged by the outbox): the oldest Slack-only one, else the oldest."""
MAX_TITLE = 200
MAX_SUMMARY = 600
MAX_NAME = 253
KINDS = ("rollout_started", "rollout_complete", "notify_matched", "review_needed", "rollout_failed",
         "rollback_started", "rollback_completed", "rollback_failed", "recovered", "superseded",
         "review_closed", "analysis_error")
"""`daemon.notify.model.AlertKind` values (a test keeps the two in step; this module stays pure)."""
QUIET = ("rollout_started", "rollout_complete", "notify_matched", "superseded")
"""The kinds that page nobody by default: dropped first when the outbox is full."""


_REASON = re.compile(r"[A-Za-z]{1,64}")


class OwedError(ValueError):
    """An outbox entry could not be understood."""


@dataclass(frozen=True)
class Owed:
    """One announcement still owed: enough to send it again, nothing that only the decider knew."""

    kind: str
    revision: int
    hash: str
    at: float
    """When it was decided, epoch seconds."""
    title: str
    summary: str
    rule: str | None = None
    action: str | None = None
    approve: bool = False
    """A review: the re-sent alert carries the approve and deny commands again."""
    reason: str = "Announced"
    """The decision's Event reason (`RolledBack`, `ReviewRequested`, ...)."""
    warning: bool = False
    """Whether that Event is a Warning."""

    @property
    def key(self) -> tuple[int, str, str, str | None]:
        """What makes two entries the same announcement (the notification pipeline's dedup identity)."""
        return (self.revision, self.hash, self.kind, self.rule)

    def event_name(self, deployment: str) -> str:
        """The name of the entry's Event: the same for the decider and any successor, so that the Event
        is recorded once (the API server refuses a second create of a name). Shaped as every Event's
        name (`<object>.<hex nanoseconds>`), from the decision's time: names still sort by time."""
        return f"{deployment}.{int(self.at * 1e9):x}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "revision": self.revision, "hash": self.hash, "at": self.at,
                "title": self.title[:MAX_TITLE], "summary": self.summary[:MAX_SUMMARY], "rule": self.rule,
                "action": self.action, "approve": self.approve, "reason": self.reason, "warning": self.warning}

    @classmethod
    def parse(cls, item: object, *, latest: float) -> Owed:
        """Read one entry; raises `OwedError` naming the field. `latest`: the latest acceptable time."""
        if not isinstance(item, dict):
            raise OwedError("must be an object")
        kind = item.get("kind")
        if kind not in KINDS:
            raise OwedError(f"kind must be one of {', '.join(KINDS)}")
        revision = item.get("revision")
        if isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision < 2**31:
            raise OwedError("revision must be a revision number")
        at = item.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or not 0 <= at <= latest:
            raise OwedError("at must be a finite time in epoch seconds, not in the future")
        approve, warning = item.get("approve", False), item.get("warning", False)
        if not isinstance(approve, bool) or not isinstance(warning, bool):
            raise OwedError("approve and warning must be true or false")
        reason = item.get("reason", "Announced")
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise OwedError("reason must be an Event reason (letters, at most 64)")
        return cls(kind=str(kind), revision=revision, hash=_text(item.get("hash"), "hash", 64, required=True) or "",
                   at=float(at), title=_text(item.get("title"), "title", MAX_TITLE, required=True) or "",
                   summary=_text(item.get("summary"), "summary", MAX_SUMMARY) or "",
                   rule=_text(item.get("rule"), "rule", MAX_NAME), action=_text(item.get("action"), "action", 32),
                   approve=approve, reason=reason, warning=warning)


def _text(value: object, name: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise OwedError(f"{name} must be a {'non-empty ' if required else ''}string of at most {limit} characters")
    return value


def with_entry(entries: tuple[Owed, ...], entry: Owed) -> tuple[tuple[Owed, ...], tuple[Owed, ...]]:
    """`entries` with `entry` added (replacing the same announcement), newest last, at most `MAX_OWED`;
    and the entries dropped to make room — Slack-only ones first, oldest first."""
    kept = [*(e for e in entries if e.key != entry.key), entry]
    lost: list[Owed] = []
    while len(kept) > MAX_OWED:
        victim = next((e for e in kept if e.kind in QUIET), kept[0])
        kept.remove(victim)
        lost.append(victim)
    return tuple(kept), tuple(lost)
