"""Analysis state kept in an annotation on the Deployment, so a restarted daemon resumes where it stopped.

One annotation, `rollguard.io/state`, holds compact JSON (schema version 2):

    {"v": 2,
     "rollout": {"revision": 7, "hash": "5d4f8c9b7", "startedAt": 1700000000.0},
     "phase": "analysing" | "review" | "rolling-back" | "rolled-back" | "rollback-failed" | "passed"
              | "denied" | "superseded" | "failed" | "fenced",   # `daemon.lifecycle.Stage`
     "rules": {"version": 1, "rules": {...}},   # the evaluator's per-rule `for:` timers
     "decision": {"action": "rollback", "rule": "error-rate", "at": 1700000123.0, "reason": "..."} | null,
     "completedAt": 1700000060.0 | null,
     "rollback": {"step": "job" | "undo" | "following" | "done", "target": 6 | null, "job": "web-rb-7-5d4f8" | null,
                  "reason": "...", "at": 1700000123.0, "approvedBy": "alice" | null} | null,
     "announced": ["rollback_started", ...],   # announcements made for this rollout (re-sent after a crash)
     "rolledBack": [{"hash": "5d4f8c9b7", "revision": 7, "at": 1700000130.0}, ...],   # newest last, capped
     "rollbackTimes": [1700000130.0, ...],                                            # for the rate cap
     "passed": [{"hash": "7c9d8e6f5", "revision": 6, "at": 1699990000.0}, ...],     # newest last, capped
     "outbox": [{"kind": "review_needed", "revision": 7, ...}, ...]}   # announcements not yet delivered

Version 1 (without `rollback` and `announced`) and version 2 without `passed` or `outbox` are still
read. `outbox` (`daemon.kube.owed`) outlives the rollout it was written for: a newer rollout's state
carries it on until each entry is delivered.

The annotation is input like any other: it is validated strictly (`StateError` names the first
problem) — types, finite numbers, times no later than now plus a small skew, bounded sizes — and an
invalid state is ignored as a whole, never half-trusted.

The state of the *current* rollout is only trusted when its `rollout` matches the Deployment's
current revision and template hash: Kubernetes copies Deployment annotations onto ReplicaSets and
`rollout undo` copies them back, so stale copies are normal and must be recognised as stale.
`rolledBack`, `rollbackTimes` and `passed` (the revisions whose analysis passed: what `baseline:
stable` compares with) are memory about the Deployment as a whole: a human `kubectl rollout undo`
replaces the annotation by a ReplicaSet's older copy, so that memory is the union of every copy (the
Deployment's and its ReplicaSets'), see `remembered_history`. A copy whose own rollout passed counts
as a passed entry, so states written before `passed` existed still name their passed revision.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from daemon.kube.owed import MAX_OWED, Owed, OwedError

STATE_ANNOTATION = "rollguard.io/state"
ROLLGUARD_PREFIX = "rollguard.io/"
MAX_REMEMBERED = 20
MAX_STATE_BYTES = 64 * 1024
"""An annotation longer than this is not rollguard's (a few hundred bytes; up to ~30 KiB with a full outbox)."""
MAX_RULE_TIMERS = 200
MAX_ANNOUNCED = 32
MAX_TEXT = 600
CLOCK_SKEW = 300.0
"""Seconds: a time in the state later than now plus this is refused (a clock far ahead, or a forgery)."""

PHASES = ("analysing", "review", "rolling-back", "rolled-back", "rollback-failed", "passed", "denied",
          "superseded", "failed", "fenced")
ROLLBACK_STEPS = ("job", "undo", "following", "done")


class StateError(ValueError):
    """The state annotation could not be understood (it is then ignored, never half-trusted)."""


@dataclass(frozen=True)
class RolledBack:
    """A template that rollguard rolled back: re-applying it pages instead of flapping."""

    hash: str
    revision: int
    at: float


@dataclass(frozen=True)
class Passed:
    """A revision whose analysis passed: `baseline: stable` measures the newest one still present."""

    hash: str
    revision: int
    at: float
    """When it passed (or when its rollout started, for a copy that does not say), epoch seconds."""


@dataclass(frozen=True)
class RollbackProgress:
    """How far a rollback got; persisted before each step so a restart neither repeats nor drops one."""

    step: str
    """`job` (the pre-rollback Job is created or about to be), `undo` (about to write the undo),
    `following` (the undo is written; its rollout is followed), `done` (its rollout completed)."""
    target: int | None = None
    """The revision rolled back to."""
    job: str | None = None
    """The pre-rollback Job's name (derived from the Deployment and revision: a retry adopts it)."""
    reason: str = ""
    at: float = 0.0
    approved_by: str | None = None


_Entry = TypeVar("_Entry", RolledBack, Passed)


@dataclass(frozen=True)
class AnalysisState:
    """What a daemon needs to resume a Deployment's analysis (see the module docstring for the JSON)."""

    revision: int | None = None
    pod_template_hash: str | None = None
    started_at: float | None = None
    phase: str = "analysing"
    rules: Mapping[str, Any] = field(default_factory=dict)
    decision: Mapping[str, Any] | None = None
    completed_at: float | None = None
    rollback: RollbackProgress | None = None
    announced: tuple[str, ...] = ()
    rolled_back: tuple[RolledBack, ...] = ()
    rollback_times: tuple[float, ...] = ()
    passed: tuple[Passed, ...] = ()
    outbox: tuple[Owed, ...] = ()
    """Announcements decided and not yet known delivered, of this rollout or earlier ones."""

    def is_for(self, revision: int, pod_template_hash: str) -> bool:
        """Whether the per-rollout part belongs to this revision and template."""
        return self.revision == revision and self.pod_template_hash == pod_template_hash

    def for_new_rollout(self, revision: int, pod_template_hash: str, started_at: float) -> AnalysisState:
        """Fresh per-rollout state, keeping the Deployment-wide memory."""
        return AnalysisState(revision=revision, pod_template_hash=pod_template_hash, started_at=started_at,
                             rolled_back=self.rolled_back, rollback_times=self.rollback_times,
                             passed=_passed_union([self.passed, self._own_pass()]), outbox=self.outbox)

    def _own_pass(self) -> tuple[Passed, ...]:
        """This state's own rollout as a `Passed` entry, when it passed."""
        if self.phase != "passed" or self.revision is None or not self.pod_template_hash:
            return ()
        return (Passed(self.pod_template_hash, self.revision, self.completed_at or self.started_at or 0.0),)

    def passed_revisions(self) -> tuple[Passed, ...]:
        """Every revision known to have passed, this state's own included, oldest first."""
        return _passed_union([self.passed, self._own_pass()])

    def was_rolled_back(self, pod_template_hash: str) -> RolledBack | None:
        return next((r for r in reversed(self.rolled_back) if r.hash == pod_template_hash), None)

    def remember_rollback(self, *, pod_template_hash: str, revision: int, at: float) -> AnalysisState:
        if any(r.hash == pod_template_hash and r.revision == revision for r in self.rolled_back):
            return self  # the same rollback, recorded again after a restart: not a second one
        rolled = (*self.rolled_back, RolledBack(pod_template_hash, revision, at))[-MAX_REMEMBERED:]
        times = (*self.rollback_times, at)[-MAX_REMEMBERED:]
        return replace(self, rolled_back=rolled, rollback_times=times)

    def rollbacks_since(self, since: float) -> int:
        return sum(1 for t in self.rollback_times if t >= since)

    def was_announced(self, what: str) -> bool:
        return what in self.announced

    def with_announced(self, what: str) -> AnalysisState:
        if what in self.announced:
            return self
        return replace(self, announced=(*self.announced, what)[-MAX_ANNOUNCED:])

    def merged_memory(self, others: Iterable[AnalysisState]) -> AnalysisState:
        """This state with the Deployment-wide memory of `others` added (union, newest last, capped)."""
        rolled = {(r.hash, r.revision): r for r in self.rolled_back}
        times = set(self.rollback_times)
        for other in others:
            for r in other.rolled_back:
                rolled.setdefault((r.hash, r.revision), r)
            times.update(other.rollback_times)
        ordered = tuple(sorted(rolled.values(), key=lambda r: r.at))[-MAX_REMEMBERED:]
        others = list(others)
        passed = _passed_union([self.passed, *(o.passed_revisions() for o in others)])
        return replace(self, rolled_back=ordered, rollback_times=tuple(sorted(times))[-MAX_REMEMBERED:],
                       passed=passed)

    def to_json(self) -> str:
        rollback = None
        if self.rollback is not None:
            rb = self.rollback
            rollback = {"step": rb.step, "target": rb.target, "job": rb.job, "reason": rb.reason[:MAX_TEXT],
                        "at": rb.at, "approvedBy": rb.approved_by}
        body: dict[str, Any] = {
            "v": 2,
            "rollout": {"revision": self.revision, "hash": self.pod_template_hash, "startedAt": self.started_at},
            "phase": self.phase,
            "rules": dict(self.rules),
            "decision": dict(self.decision) if self.decision is not None else None,
            "completedAt": self.completed_at,
            "rollback": rollback,
            "announced": list(self.announced),
            "rolledBack": [{"hash": r.hash, "revision": r.revision, "at": r.at} for r in self.rolled_back],
            "rollbackTimes": list(self.rollback_times),
        }
        if self.passed:
            body["passed"] = [{"hash": r.hash, "revision": r.revision, "at": r.at} for r in self.passed]
        if self.outbox:
            body["outbox"] = [entry.to_dict() for entry in self.outbox]
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, now: float) -> AnalysisState:
        """Parse and validate; raises `StateError` naming the first problem."""
        if len(text) > MAX_STATE_BYTES:
            raise StateError(f"{STATE_ANNOTATION} is {len(text)} bytes, more than rollguard ever writes "
                             f"({MAX_STATE_BYTES})")
        try:
            body = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise StateError(f"{STATE_ANNOTATION} is not JSON: {str(exc)[:200]}") from None
        return _Validator(now).state(body)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number rollguard writes")


class _Validator:
    """Strict reading of the state JSON; every problem is a `StateError` with the field's path."""

    def __init__(self, now: float) -> None:
        self._latest = now + CLOCK_SKEW

    def state(self, body: object) -> AnalysisState:
        if not isinstance(body, dict):
            raise StateError(f"{STATE_ANNOTATION} must be a JSON object")
        version = body.get("v")
        if version not in (1, 2):
            raise StateError(f"{STATE_ANNOTATION}: unsupported state version {version!r}")
        rollout = self._mapping(body.get("rollout"), "rollout", optional=True) or {}
        phase = body.get("phase", "analysing")
        if phase not in PHASES:
            raise StateError(f"{STATE_ANNOTATION}: phase {_show(phase)} is not one of {', '.join(PHASES)}")
        decision = self._mapping(body.get("decision"), "decision", optional=True)
        if decision is not None:
            for key, value in decision.items():
                if key == "at":
                    self._time(value, "decision.at")
                elif key == "notified":
                    self._strings(value, "decision.notified", limit=MAX_RULE_TIMERS)
                elif value is not None and not isinstance(value, str):
                    raise StateError(f"{STATE_ANNOTATION}: decision.{key} must be a string")
                elif isinstance(value, str) and len(value) > MAX_TEXT:
                    raise StateError(f"{STATE_ANNOTATION}: decision.{key} is longer than {MAX_TEXT} characters")
        return AnalysisState(
            revision=self._int(rollout.get("revision"), "rollout.revision"),
            pod_template_hash=self._text(rollout.get("hash"), "rollout.hash", limit=64),
            started_at=self._time(rollout.get("startedAt"), "rollout.startedAt"),
            phase=str(phase),
            rules=self._rules(body.get("rules")),
            decision=decision,
            completed_at=self._time(body.get("completedAt"), "completedAt"),
            rollback=self._rollback(body.get("rollback")),
            announced=tuple(self._strings(body.get("announced"), "announced", limit=MAX_ANNOUNCED)),
            rolled_back=tuple(self._remembered(body.get("rolledBack"), "rolledBack", RolledBack)),
            rollback_times=tuple(self._required_time(t, "rollbackTimes[]")
                                 for t in self._list(body.get("rollbackTimes"), "rollbackTimes", MAX_REMEMBERED)),
            passed=tuple(self._remembered(body.get("passed"), "passed", Passed)),
            outbox=tuple(self._outbox(body.get("outbox"))),
        )

    def _rules(self, value: object) -> dict[str, Any]:
        rules = self._mapping(value, "rules", optional=True)
        if not rules:
            return {}
        if rules.get("version") != 1 or not isinstance(rules.get("rules"), dict):
            raise StateError(f"{STATE_ANNOTATION}: rules must be {{\"version\": 1, \"rules\": {{...}}}}")
        timers = rules["rules"]
        if len(timers) > MAX_RULE_TIMERS:
            raise StateError(f"{STATE_ANNOTATION}: rules has {len(timers)} timers (at most {MAX_RULE_TIMERS})")
        for name, entry in timers.items():
            if not isinstance(entry, dict) or len(name) > 253:
                raise StateError(f"{STATE_ANNOTATION}: rules.rules[{_show(name)}] must be an object")
            for key in ("pendingSince", "unavailableSince"):
                self._time(entry.get(key), f"rules.rules[{_show(name)}].{key}")
        return dict(rules)

    def _rollback(self, value: object) -> RollbackProgress | None:
        rb = self._mapping(value, "rollback", optional=True)
        if rb is None:
            return None
        step = rb.get("step")
        if step not in ROLLBACK_STEPS:
            raise StateError(f"{STATE_ANNOTATION}: rollback.step {_show(step)} is not one of "
                             f"{', '.join(ROLLBACK_STEPS)}")
        return RollbackProgress(
            step=str(step), target=self._int(rb.get("target"), "rollback.target"),
            job=self._text(rb.get("job"), "rollback.job", limit=63),
            reason=self._text(rb.get("reason"), "rollback.reason", limit=MAX_TEXT) or "",
            at=self._required_time(rb.get("at", 0.0), "rollback.at"),
            approved_by=self._text(rb.get("approvedBy"), "rollback.approvedBy", limit=128))

    def _remembered(self, value: object, where: str, kind: type[_Entry]) -> Iterable[_Entry]:
        """`rolledBack` and `passed` entries: a revision, its template hash and a time."""
        for i, item in enumerate(self._list(value, where, MAX_REMEMBERED)):
            entry = self._mapping(item, f"{where}[{i}]")
            assert entry is not None
            revision = self._int(entry.get("revision"), f"{where}[{i}].revision")
            hash_ = self._text(entry.get("hash"), f"{where}[{i}].hash", limit=64)
            if revision is None or not hash_:
                raise StateError(f"{STATE_ANNOTATION}: {where}[{i}] needs a revision and a hash")
            yield kind(hash_, revision, self._required_time(entry.get("at"), f"{where}[{i}].at"))

    def _outbox(self, value: object) -> Iterable[Owed]:
        for i, item in enumerate(self._list(value, "outbox", MAX_OWED)):
            try:
                yield Owed.parse(item, latest=self._latest)
            except OwedError as exc:
                raise StateError(f"{STATE_ANNOTATION}: outbox[{i}]: {exc}") from None

    # ----- scalars -----

    @staticmethod
    def _mapping(value: object, where: str, *, optional: bool = False) -> dict[str, Any] | None:
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise StateError(f"{STATE_ANNOTATION}: {where} must be an object")
        return value

    @staticmethod
    def _list(value: object, where: str, limit: int) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise StateError(f"{STATE_ANNOTATION}: {where} must be a list")
        if len(value) > limit:
            raise StateError(f"{STATE_ANNOTATION}: {where} has {len(value)} entries (at most {limit})")
        return value

    def _strings(self, value: object, where: str, *, limit: int) -> list[str]:
        items = self._list(value, where, limit)
        if not all(isinstance(item, str) and len(item) <= 253 for item in items):
            raise StateError(f"{STATE_ANNOTATION}: {where} must be a list of short strings")
        return [str(item) for item in items]

    @staticmethod
    def _int(value: object, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise StateError(f"{STATE_ANNOTATION}: {where} must be a revision number, not {_show(value)}")
        return value

    @staticmethod
    def _text(value: object, where: str, *, limit: int) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise StateError(f"{STATE_ANNOTATION}: {where} must be a string of at most {limit} characters")
        return value

    def _time(self, value: object, where: str) -> float | None:
        if value is None:
            return None
        return self._required_time(value, where)

    def _required_time(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise StateError(f"{STATE_ANNOTATION}: {where} must be a finite time in epoch seconds, not {_show(value)}")
        if value < 0 or value > self._latest:
            raise StateError(f"{STATE_ANNOTATION}: {where} = {value!r} is in the future (or before 1970)")
        return float(value)


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _passed_union(groups: Iterable[Iterable[Passed]]) -> tuple[Passed, ...]:
    """Passed entries of every group, one per (hash, revision), oldest first, capped."""
    merged: dict[tuple[str, int], Passed] = {}
    for group in groups:
        for entry in group:
            merged.setdefault((entry.hash, entry.revision), entry)
    return tuple(sorted(merged.values(), key=lambda r: (r.at, r.revision)))[-MAX_REMEMBERED:]


def read_state(obj: Mapping[str, Any], *, now: float | None = None) -> AnalysisState:
    """The state stored on a Deployment (or a ReplicaSet's copy); absent gives empty state.

    `now` (epoch seconds, default the system time) bounds the times it may contain. Raises
    `StateError` for an invalid annotation."""
    now = time.time() if now is None else now
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION)
    if not raw:
        return AnalysisState()
    return AnalysisState.from_json(str(raw), now=now)


def remembered_history(replica_sets: Iterable[Mapping[str, Any]], *, now: float) -> list[AnalysisState]:
    """The valid state copies on a Deployment's ReplicaSets (the controller copies the Deployment's
    annotations onto its new ReplicaSet); invalid copies are skipped. Only their Deployment-wide memory
    (`rolledBack`, `rollbackTimes`, `passed`, and the copy's own passed rollout) is ever used: it only
    grows, so a union cannot forget a rollback."""
    copies = []
    for rs in replica_sets:
        try:
            copies.append(read_state(rs, now=now))
        except StateError:
            continue
    return copies


def state_patch(state: AnalysisState) -> dict[str, Any]:
    """The merge patch that stores `state` (other writers' fields are untouched)."""
    return {"metadata": {"annotations": {STATE_ANNOTATION: state.to_json()}}}
