"""What `rollguard replay` prints: per rollout the outcome, when, which rule and its values; a summary table.

`as_json` is the `-o json` document (times in epoch seconds, `after` in seconds from the rollout start);
`as_text` the human one. Both read only `Replay` results.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.replay.engine import Replay
from daemon.rules.durations import format_duration

OUTCOMES = ("rolled back", "reviewed", "notified", "passed", "unknown")
"""Every outcome, most severe first (the rows of the summary)."""


def stamp(epoch: float) -> str:
    """Epoch seconds as `2026-11-30T21:00:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(replays: Sequence[Replay]) -> dict[str, int]:
    """Outcome → how many rollouts reached it, every outcome present."""
    return {outcome: sum(1 for r in replays if r.outcome == outcome) for outcome in OUTCOMES}


def _title(replay: Replay) -> str:
    r = replay.rollout
    images = f" ({', '.join(r.images)})" if r.images else ""
    source = f" (from {replay.source})" if replay.source else ""
    return f"{r.id.namespace}/{r.id.name} revision {r.id.revision}{images}, started {stamp(r.started_at)}{source}"


def as_text(replays: Sequence[Replay], *, notes: Sequence[str] = ()) -> str:
    """The report for people: one block per rollout, then the summary table and the notes."""
    lines: list[str] = []
    for replay in replays:
        start = replay.rollout.started_at
        lines.append(f"{_title(replay)}, policy {replay.rollout.policy.name}")
        when = f" at +{format_duration(replay.at - start)}" if replay.at is not None else ""
        by = f" by rule {replay.rule}" if replay.rule else ""
        lines.append(f"  would have {replay.outcome}{when}{by}" if replay.outcome != "unknown"
                     else f"  unknown{when}")
        lines.append(f"    {replay.message}")
        for name, why in replay.not_replayable.items():
            lines.append(f"    signal {name}: not replayable ({why})")
        if replay.replaced:
            lines.append(f"    replaced by the next rollout after {len(replay.ticks)} evaluations")
    counts = summary(replays)
    lines.append("")
    lines.append(f"{'outcome':<13} rollouts")
    lines.extend(f"{outcome:<13} {count}" for outcome, count in counts.items())
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines) + "\n"


def as_json(replays: Sequence[Replay], *, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The `-o json` document."""
    return {
        "rollouts": [_rollout_json(replay) for replay in replays],
        "summary": summary(replays),
        "notes": list(notes),
    }


def _rollout_json(replay: Replay) -> dict[str, Any]:
    r = replay.rollout
    return {
        "namespace": r.id.namespace, "deployment": r.id.name, "revision": r.id.revision,
        "podTemplateHash": r.hash, "images": list(r.images), "policy": r.policy.name,
        "startedAt": r.started_at, "startedFrom": replay.source, "outcome": replay.outcome, "at": replay.at,
        "after": None if replay.at is None else replay.at - r.started_at,
        "rule": replay.rule, "message": replay.message, "replaced": replay.replaced,
        "notReplayable": dict(replay.not_replayable), "unknownRules": replay.unknown_rules,
        "ticks": [{"at": t.at, "after": t.at - r.started_at, "action": t.action.value, "values": dict(t.values),
                   "baselines": dict(t.baselines), "unknown": list(t.unknown),
                   "rules": {res.rule: res.status.value for res in t.verdict.rules}} for t in replay.ticks],
    }
