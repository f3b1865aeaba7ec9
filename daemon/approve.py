"""`rollguard approve NAMESPACE/DEPLOYMENT`: approve the rollback a review asked for.

It writes `rollguard.io/approve=rollback` and `rollguard.io/approve-revision=<current revision>` on
the Deployment (a merge patch); the daemon rolls back when it sees them, and ignores an approval
whose revision is no longer the Deployment's (a newer deploy landed since the review was asked).
"""

from __future__ import annotations

from pathlib import Path

from daemon.kube.client import MERGE_PATCH, KubeApiError, KubeClient, api_path
from daemon.kube.rollout_state import revision_of
from daemon.kube.state import APPROVE_ANNOTATION, APPROVE_REVISION_ANNOTATION, read_state


class ApproveError(Exception):
    """The approval could not be written; the message says why."""


def parse_target(target: str) -> tuple[str, str]:
    namespace, sep, name = target.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ApproveError(f"{target!r} is not NAMESPACE/DEPLOYMENT")
    return namespace, name


async def approve(target: str, *, kubeconfig: Path | None) -> str:
    """Write the approval; returns the line to print."""
    namespace, name = parse_target(target)
    async with await KubeClient.connect(kubeconfig) as kube:
        path = api_path("apps/v1", "deployments", namespace, name)
        try:
            deployment = await kube.get(path)
        except KubeApiError as exc:
            raise ApproveError(f"cannot read deployment {namespace}/{name}: {exc.message}") from exc
        revision = revision_of(deployment)
        if revision is None:
            raise ApproveError(f"deployment {namespace}/{name} has no revision yet")
        state = read_state(deployment)
        pending = state.phase == "review" and state.revision == revision
        await kube.patch(path, {"metadata": {"annotations": {APPROVE_ANNOTATION: "rollback",
                                                             APPROVE_REVISION_ANNOTATION: str(revision)}}},
                         content_type=MERGE_PATCH)
    note = "" if pending else " (no review is pending for this revision: rollguard will ignore it)"
    return f"deployment.apps/{name} rollback of revision {revision} approved{note}"
