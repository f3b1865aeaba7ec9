"""Gathering the analyses the daemon knows of into the API's documents (pure: no I/O).

The reconciler lists live analyses first, then finished ones newest first; a superseded analysis
appears there twice (once as it was cancelled, once with its final stage): the first one wins.
Deployments whose state annotation records a rollout the daemon holds no analysis for (a review
pending since before a restart, a replica that does not lead) are shown from the annotation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH
from daemon.kube.state import AnalysisState, StateError, read_state
from daemon.lifecycle import TERMINAL, Stage
from daemon.view.schema import analysis_list, annotation_item, decision_of
from daemon.view.text import rfc3339

Key = tuple[str, str]
Obj = Mapping[str, Any]
DETAIL = "detail"
"""Key of a v1 view that carries the v2 item, or the analysis method that builds it (never served on
`/api/v1/analyses`)."""


def _identity(view: Mapping[str, Any]) -> tuple[Any, ...]:
    return view.get("namespace"), view.get("deployment"), view.get("revision"), view.get("podTemplateHash")


def _recorded(view: Mapping[str, Any], deployments: Mapping[Key, Obj], now: float) -> AnalysisState | None:
    """The Deployment's state annotation when it is about this view's rollout: after an analysis ended,
    what happened next (the rollback completed, a human approved) is recorded there, not in the view."""
    deployment = deployments.get((str(view.get("namespace")), str(view.get("deployment"))))
    if deployment is None:
        return None
    try:
        state = read_state(deployment, now=now)
    except StateError:
        return None
    return state if state.is_for(int(view.get("revision") or 0), str(view.get("podTemplateHash") or "")) else None


def _running(view: Mapping[str, Any]) -> bool:
    """Whether the view's analysis still runs (its `detail` is the method of an analysis not ended yet)."""
    owner = getattr(view.get(DETAIL), "__self__", None)
    return owner is not None and getattr(owner, "ended_at", 0.0) is None


def v1_views(views: Iterable[Mapping[str, Any]], deployments: Mapping[Key, Obj], *,
             now: float) -> list[dict[str, Any]]:
    """The `/api/v1/analyses` list: its shape as before, one entry per rollout (the first wins), a finished
    one with the stage its Deployment's state annotation records now."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for view in views:
        if _identity(view) in seen:
            continue
        seen.add(_identity(view))
        entry = {k: v for k, v in view.items() if k != DETAIL}
        recorded = None if _running(view) else _recorded(view, deployments, now)
        if recorded is not None:
            entry["phase"] = recorded.phase
        out.append(entry)
    return out


def previous_images(replica_sets: Sequence[Obj], pod_template_hash: str | None) -> list[str]:
    """The images of the ReplicaSet of `pod_template_hash` (the revision before an analysed one)."""
    previous = next((rs for rs in replica_sets if pod_template_hash and (
        (rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH) == pod_template_hash), None)
    template = ((previous or {}).get("spec") or {}).get("template") or {}
    return [str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or []]


def v2_document(views: Iterable[Mapping[str, Any]], deployments: Mapping[Key, Obj],
                replica_sets_of: Callable[[Any], Sequence[Obj]], *, now: float) -> dict[str, Any]:
    """The `/api/v2/analyses` document (`daemon.view.schema`) at `now` (epoch seconds)."""
    items: list[dict[str, Any]] = []
    for view in views:
        detail = view.get(DETAIL)
        if callable(detail):  # an analysis' `detail` method: built now (a finished one's stopped at its end)
            detail = detail()
        if not isinstance(detail, Mapping):
            continue
        item = dict(detail)
        item["state"] = str(view.get("phase") or item["state"])  # the final stage, set after the analysis ended
        recorded = None if item["live"] else _recorded(view, deployments, now)
        if recorded is not None:
            item["state"] = recorded.phase
            before, after = item["verdict"], decision_of(recorded)
            if after is not None and after["rule"] is None and before:
                after["rule"] = before.get("rule")  # the rule that decided, before the rollback's own steps
            item["verdict"] = after or before
            item["approver"] = recorded.rollback.approved_by if recorded.rollback is not None else item["approver"]
        elif item["state"] == Stage.SUPERSEDED:
            item["verdict"] = {"action": "superseded", "reason": "a newer rollout of the Deployment started",
                               "rule": None}
        deployment = deployments.get((item["namespace"], item["deployment"]))
        if deployment is not None and not (item["images"] or {}).get("old"):
            old = previous_images(replica_sets_of(deployment), item.get("previousPodTemplateHash"))
            item["images"] = {**item["images"], "old": old or None}
        items.append(item)
    for obj in deployments.values():
        try:
            state = read_state(obj, now=now)
        except StateError:
            continue  # the daemon reports it (Event InvalidState)
        shown = annotation_item(obj, state)
        if shown is None:
            continue
        item = shown
        if state.phase in TERMINAL:
            item["endedAt"] = rfc3339(float((state.decision or {}).get("at") or state.started_at or 0.0))
        items.append(item)
    return analysis_list(items, now=now)
