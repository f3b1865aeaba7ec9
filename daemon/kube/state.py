"""Analysis state kept in an annotation on the Deployment, so a restarted daemon resumes where it stopped.

One annotation, `rollguard.io/state`, holds compact JSON:

    {"v": 1,
     "rollout": {"revision": 7, "hash": "5d4f8c9b7", "startedAt": 1700000000.0},
     "phase": "analysing" | "passed" | "review" | "rolling-back" | "rolled-back" | "failed" | "fenced",
     "rules": {...},                   # the evaluator's per-rule `for:` timers (EvaluationState.to_dict())
     "decision": {"action": "rollback", "rule": "error-rate", "at": 1700000123.0, "reason": "..."} | null,
     "completedAt": 1700000060.0 | null,
     "rolledBack": [{"hash": "5d4f8c9b7", "revision": 7, "at": 1700000130.0}, ...],   # newest last, capped
     "rollbackTimes": [1700000130.0, ...]}                                            # for the rate cap

The state of the *current* rollout is only trusted when its `rollout` matches the Deployment's
current revision and template hash: Kubernetes copies Deployment annotations onto ReplicaSets and
`rollout undo` copies them back, so stale copies are normal and must be recognised as stale.
`rolledBack` and `rollbackTimes` are memory about the Deployment as a whole and always kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from daemon.kube.client import MERGE_PATCH, KubeClient, api_path

STATE_ANNOTATION = "rollguard.io/state"
APPROVE_ANNOTATION = "rollguard.io/approve"
APPROVE_REVISION_ANNOTATION = "rollguard.io/approve-revision"
ROLLGUARD_PREFIX = "rollguard.io/"
MAX_REMEMBERED = 20


class StateError(ValueError):
    """The state annotation could not be understood (it is then ignored, never half-trusted)."""


@dataclass(frozen=True)
class RolledBack:
    """A template that rollguard rolled back: re-applying it pages instead of flapping."""

    hash: str
    revision: int
    at: float


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
    rolled_back: tuple[RolledBack, ...] = ()
    rollback_times: tuple[float, ...] = ()

    def is_for(self, revision: int, pod_template_hash: str) -> bool:
        """Whether the per-rollout part belongs to this revision and template."""
        return self.revision == revision and self.pod_template_hash == pod_template_hash

    def for_new_rollout(self, revision: int, pod_template_hash: str, started_at: float) -> AnalysisState:
        """Fresh per-rollout state, keeping the Deployment-wide memory."""
        return AnalysisState(revision=revision, pod_template_hash=pod_template_hash, started_at=started_at,
                             rolled_back=self.rolled_back, rollback_times=self.rollback_times)

    def was_rolled_back(self, pod_template_hash: str) -> RolledBack | None:
        return next((r for r in reversed(self.rolled_back) if r.hash == pod_template_hash), None)

    def remember_rollback(self, *, pod_template_hash: str, revision: int, at: float) -> AnalysisState:
        rolled = (*self.rolled_back, RolledBack(pod_template_hash, revision, at))[-MAX_REMEMBERED:]
        times = (*self.rollback_times, at)[-MAX_REMEMBERED:]
        return replace(self, rolled_back=rolled, rollback_times=times)

    def rollbacks_since(self, since: float) -> int:
        return sum(1 for t in self.rollback_times if t >= since)

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "v": 1,
            "rollout": {"revision": self.revision, "hash": self.pod_template_hash, "startedAt": self.started_at},
            "phase": self.phase,
            "rules": dict(self.rules),
            "decision": dict(self.decision) if self.decision is not None else None,
            "completedAt": self.completed_at,
            "rolledBack": [{"hash": r.hash, "revision": r.revision, "at": r.at} for r in self.rolled_back],
            "rollbackTimes": list(self.rollback_times),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AnalysisState:
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("v") != 1:
                raise StateError(f"unsupported state version {body.get('v') if isinstance(body, dict) else None!r}")
            rollout = body.get("rollout") or {}
            return cls(
                revision=None if rollout.get("revision") is None else int(rollout["revision"]),
                pod_template_hash=rollout.get("hash"),
                started_at=None if rollout.get("startedAt") is None else float(rollout["startedAt"]),
                phase=str(body.get("phase", "analysing")),
                rules=dict(body.get("rules") or {}),
                decision=body.get("decision"),
                completed_at=None if body.get("completedAt") is None else float(body["completedAt"]),
                rolled_back=tuple(RolledBack(str(r["hash"]), int(r["revision"]), float(r["at"]))
                                  for r in body.get("rolledBack") or []),
                rollback_times=tuple(float(t) for t in body.get("rollbackTimes") or []),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StateError(f"{STATE_ANNOTATION} is not valid state: {exc}") from exc


def read_state(deployment: Mapping[str, Any]) -> AnalysisState:
    """The state stored on a Deployment; an absent or unreadable annotation gives empty state."""
    raw = ((deployment.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION)
    if not raw:
        return AnalysisState()
    return AnalysisState.from_json(str(raw))


async def write_state(client: KubeClient, namespace: str, name: str, state: AnalysisState) -> dict[str, Any]:
    """Store the state with a merge patch of the one annotation (other writers' fields are untouched)."""
    return await client.patch(api_path("apps/v1", "deployments", namespace, name),
                              {"metadata": {"annotations": {STATE_ANNOTATION: state.to_json()}}},
                              content_type=MERGE_PATCH)
