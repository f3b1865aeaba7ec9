"""The `/api/v2/analyses` document: every live analysis and the recently finished ones, for people and tools.

    {"apiVersion": "rollguard.io/v2", "kind": "AnalysisList", "generatedAt": "2026-12-01T10:00:00.000Z",
     "items": [{
       "namespace": "staging", "deployment": "backend", "revision": 3, "podTemplateHash": "5d4f8c9b7",
       "previousPodTemplateHash": "7c9d6b5f4" | null,             # the revision before (baselines, old images)
       "policy": "backend-staging", "state": "analysing",      # daemon.lifecycle.Stage
       "live": true,                                          # an analysis is running now
       "source": "daemon",                                    # or "annotation": read back from the state
       "images": {"old": ["backend:v2"], "new": ["backend:v3"]},
       "startedAt": "...", "completedAt": "..." | null, "endedAt": "..." | null,
       "evaluations": 7, "lastEvaluationAt": "..." | null,
       "nextEvaluationInSeconds": 0.6 | null, "bakeTimeLeftSeconds": 4.2 | null,
       "signals": [{"name": "error_rate", "provider": "prometheus", "phase": "ok", "value": 0.12,
                    "message": "...", "baseline": 0.01 | null,
                    "thresholds": [{"rule": "error-rate-over-5pct", "op": ">", "value": 0.05}],
                    "history": [["2026-...Z", 0.12], ...]}],           # bounded, oldest first
       "rules": [{"name": "error-rate-over-5pct", "action": "rollback", "when": "error_rate > 0.05",
                  "forSeconds": 6.0, "status": "pending", "text": "pending 4s of 6s",
                  "pendingSeconds": 4.0 | null}],
       "marks": [{"at": "...", "rule": "error-rate-over-5pct", "event": "pending" | "fired" | "held" | "cleared"}],
       "verdict": {"action": "rollback", "reason": "...", "rule": "error-rate-over-5pct" | null} | null,
       "approver": "alice" | null}]}

Numbers are plain JSON numbers (values, seconds); every time is RFC 3339 in UTC. Pure: the callers
hand in what they know (a running analysis, a finished one's snapshot, a state annotation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.kube.state import AnalysisState
from daemon.lifecycle import LIVE
from daemon.measurement import Phase
from daemon.rollout import Rollout
from daemon.rules.evaluate import Verdict
from daemon.view.history import AnalysisHistory
from daemon.view.text import parse_rfc3339, provider_name, rfc3339, show_rule, thresholds

API_VERSION = "rollguard.io/v2"
RETENTION = 3600.0
"""Seconds a finished analysis stays in the list after it ended."""


@dataclass(frozen=True)
class Running:
    """What an analysis knows about itself (`daemon.analysis.Analysis` hands this over)."""

    rollout: Rollout
    state: AnalysisState
    history: AnalysisHistory
    verdict: Verdict | None
    evaluations: int
    completed_at: float | None
    ended_at: float | None
    """When the analysis task ended (None while it runs)."""


def analysis_item(run: Running, *, now: float, previous_images: Sequence[str] = (),
                  with_history: bool = True) -> dict[str, Any]:
    """One item of the list for an analysis (running, or ended at `run.ended_at`), at `now` (epoch seconds).
    Without `with_history`, `signals[].history` and `marks` are empty (the metrics need only the last values)."""
    rollout, history, policy = run.rollout, run.history, run.rollout.policy
    base_values = {n: m.value if isinstance(m.value, float | int) and not isinstance(m.value, bool) else None
                   for n, m in history.baselines.items() if m.phase in (Phase.OK, Phase.FAILED)}
    drawn = thresholds(policy.rules, base_values)
    signals = []
    for name, spec in policy.signals.items():
        m = history.measurements.get(name)
        points = history.signals.get(name, ()) if with_history else ()
        signals.append({
            "name": name, "provider": provider_name(spec),
            "phase": m.phase.value if m else None,
            "value": m.value if m is not None and m.phase in (Phase.OK, Phase.FAILED) else None,
            "message": m.message if m else None,
            "baseline": base_values.get(name),
            "thresholds": [{"rule": t.rule, "op": t.op, "value": t.value} for t in drawn.get(name, [])],
            "history": [[rfc3339(p.at), p.value] for p in points],
        })
    results = {r.rule: r for r in run.verdict.rules} if run.verdict is not None else {}
    at = now if run.ended_at is None else run.ended_at  # a finished analysis' timers stop when it ended
    rules = []
    for rule in policy.rules:
        shown = show_rule(rule, results.get(rule.name), now=at, signals=policy.signals,
                          measurements=history.measurements)
        rules.append({"name": rule.name, "action": rule.action.value, "when": rule.when.text,
                      "forSeconds": rule.for_, "status": shown.status, "text": shown.text,
                      "pendingSeconds": None if shown.pending_seconds is None else round(shown.pending_seconds, 3)})
    live = run.ended_at is None
    bake_left = None
    if run.completed_at is not None and live:
        bake_left = round(max(0.0, run.completed_at + policy.analysis.bake_time - now), 3)
    next_in = None if not live or history.next_at is None else round(max(0.0, history.next_at - now), 3)
    return {
        "namespace": rollout.id.namespace, "deployment": rollout.id.name, "revision": rollout.id.revision,
        "podTemplateHash": rollout.hash,
        "previousPodTemplateHash": rollout.baseline_ctx.pod_template_hash if rollout.baseline_ctx else None,
        "policy": policy.name, "state": run.state.phase, "live": live,
        "source": "daemon",
        "images": {"old": list(previous_images) or None, "new": list(rollout.images)},
        "startedAt": rfc3339(rollout.started_at), "completedAt": rfc3339(run.completed_at),
        "endedAt": rfc3339(run.ended_at), "evaluations": run.evaluations,
        "lastEvaluationAt": rfc3339(history.last_at), "nextEvaluationInSeconds": next_in,
        "bakeTimeLeftSeconds": bake_left, "signals": signals, "rules": rules,
        "marks": [{"at": rfc3339(m.at), "rule": m.rule, "event": m.event} for m in history.marks
                  if with_history],
        # While it runs, the last evaluation's verdict; once it ended, the decision it led to.
        "verdict": _evaluated(run.verdict) if live and run.verdict else _verdict(run.state, run.verdict),
        "approver": _approver(run.state),
    }


def gauges_item(run: Running, *, now: float) -> dict[str, Any]:
    """The part of `analysis_item` the per-Deployment metrics read (`state`, each signal's `name` and
    `value`, each rule's `name` and `pendingSeconds`), equal to it field for field, at a fraction of its
    cost: it is built after every evaluation of every analysis."""
    policy, history = run.rollout.policy, run.history
    signals = []
    for name in policy.signals:
        m = history.measurements.get(name)
        signals.append({"name": name, "value": m.value if m is not None and m.phase in (Phase.OK, Phase.FAILED)
                        else None})
    results = {r.rule: r for r in run.verdict.rules} if run.verdict is not None else {}
    at = now if run.ended_at is None else run.ended_at
    rules = []
    for rule in policy.rules:
        shown = show_rule(rule, results.get(rule.name), now=at, signals=policy.signals,
                          measurements=history.measurements)
        rules.append({"name": rule.name,
                      "pendingSeconds": None if shown.pending_seconds is None else round(shown.pending_seconds, 3)})
    return {"state": run.state.phase, "signals": signals, "rules": rules}


def decision_of(state: AnalysisState) -> dict[str, Any] | None:
    """The decision the state records (`verdict` of the schema), or None."""
    decision = state.decision or {}
    if not (decision.get("action") and decision.get("reason")):
        return None
    reason, rule = str(decision["reason"]), decision.get("rule")
    if rule is None and state.rollback is not None and state.rollback.reason:
        # A later step (the rollback completed or failed) replaced the decision: keep why it was taken.
        reason = f"{reason} (rolled back because {state.rollback.reason})"
    return {"action": str(decision["action"]), "reason": reason, "rule": None if rule is None else str(rule)}


def _verdict(state: AnalysisState, verdict: Verdict | None) -> dict[str, Any] | None:
    """The decision recorded in the state when there is one, else the last evaluation's verdict."""
    recorded = decision_of(state)
    if recorded is not None:
        return recorded
    return _evaluated(verdict)


def _evaluated(verdict: Verdict | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    deciding = verdict.deciding
    return {"action": verdict.action.value, "reason": verdict.reason, "rule": deciding[0].rule if deciding else None}


def _approver(state: AnalysisState) -> str | None:
    return state.rollback.approved_by if state.rollback is not None else None


def annotation_item(deployment: Mapping[str, Any], state: AnalysisState) -> dict[str, Any] | None:
    """An item read back from a Deployment's state annotation (after a restart, or with the daemon away);
    None when the annotation holds no rollout. Readings and timers are not in the annotation."""
    if state.revision is None:
        return None
    meta = deployment.get("metadata") or {}
    template = (deployment.get("spec") or {}).get("template") or {}
    images = [str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or []]
    current = str((meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", ""))
    return {
        "namespace": str(meta.get("namespace", "")), "deployment": str(meta.get("name", "")),
        "revision": state.revision, "podTemplateHash": state.pod_template_hash, "previousPodTemplateHash": None,
        "policy": None,
        "state": state.phase, "live": False, "source": "annotation",
        "images": {"old": None, "new": images if current == str(state.revision) else None},
        "startedAt": rfc3339(state.started_at), "completedAt": rfc3339(state.completed_at), "endedAt": None,
        "evaluations": None, "lastEvaluationAt": None, "nextEvaluationInSeconds": None,
        "bakeTimeLeftSeconds": None, "signals": [], "rules": [
            {"name": name, "action": None, "when": None, "forSeconds": None, "status": "pending",
             "text": "pending", "pendingSeconds": None}
            for name, timers in sorted(((state.rules or {}).get("rules") or {}).items())
            if state.phase in LIVE and isinstance(timers, Mapping) and timers.get("pendingSince") is not None],
        "marks": [], "verdict": _verdict(state, None), "approver": _approver(state),
    }


def analysis_list(items: Iterable[dict[str, Any]], *, now: float, retention: float = RETENTION) -> dict[str, Any]:
    """The document: one item per rollout (the first given wins: pass live items first, then finished
    ones newest first, then annotation ones), finished ones dropped `retention` seconds after they ended."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for item in items:
        key = (item["namespace"], item["deployment"], item["revision"], item["podTemplateHash"])
        if key in seen:
            continue
        seen.add(key)
        ended = item.get("endedAt")
        if ended is not None and item["state"] not in LIVE:
            when = parse_rfc3339(ended)
            if when is not None and now - when > retention:
                continue
        kept.append(item)
    kept.sort(key=lambda i: (not i["live"], i["state"] not in LIVE, i["namespace"], i["deployment"]))
    return {"apiVersion": API_VERSION, "kind": "AnalysisList", "generatedAt": rfc3339(now), "items": kept}
