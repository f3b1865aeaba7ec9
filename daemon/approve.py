"""`rollguard approve|deny NAMESPACE/DEPLOYMENT`: answer the review rollguard asked for.

Both read the Deployment's `rollguard.io/state` to find the revision whose review is pending, refuse
when there is none (or when `--revision` names another one), and otherwise write, with one merge
patch, `rollguard.io/approve=rollback|deny`, `rollguard.io/approve-revision=<pending revision>` and
`rollguard.io/approved-by=<--by, else the kubeconfig's current user, else $USER>`. The daemon acts
on them only for that revision (see `daemon.approval`). Kubernetes does not record who wrote an
annotation, so the approver is self-declared.

Exceptions: `ApproveError` — the approval was refused or could not be written; the message says why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.config import ConfigException

from daemon.approval import Decision, approval_patch, clean_approver
from daemon.kube.client import MERGE_PATCH, KubeClient, KubeError, api_path
from daemon.kube.rollout_state import revision_of
from daemon.kube.state import StateError, read_state


class ApproveError(Exception):
    """The approval was refused or could not be written; the message says why."""


def parse_target(target: str) -> tuple[str, str]:
    """`staging/backend` → ("staging", "backend")."""
    namespace, sep, name = target.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ApproveError(f"{target!r} is not NAMESPACE/DEPLOYMENT")
    return namespace, name


async def approve(target: str, *, kubeconfig: Path | None, revision: int | None = None,
                  by: str | None = None) -> str:
    """Approve the rollback of the revision under review; returns the line to print."""
    return await _answer(target, Decision.ROLLBACK, kubeconfig=kubeconfig, revision=revision, by=by)


async def deny(target: str, *, kubeconfig: Path | None, revision: int | None = None,
               by: str | None = None) -> str:
    """Close the review without rolling back; returns the line to print."""
    return await _answer(target, Decision.DENY, kubeconfig=kubeconfig, revision=revision, by=by)


async def _answer(target: str, decision: Decision, *, kubeconfig: Path | None, revision: int | None,
                  by: str | None) -> str:
    namespace, name = parse_target(target)
    approver = clean_approver(by) if by is not None else kubeconfig_user(kubeconfig) or clean_approver(
        os.environ.get("USER"))
    if approver is None:
        raise ApproveError("cannot tell who you are (no kubeconfig user, no $USER): pass --by NAME")
    verb = "approve" if decision is Decision.ROLLBACK else "deny"
    try:
        kube = await KubeClient.connect(kubeconfig)
    except (ConfigException, OSError) as exc:
        raise ApproveError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
    async with kube:
        path = api_path("apps/v1", "deployments", namespace, name)
        try:
            deployment = await kube.get(path)
        except KubeError as exc:
            raise ApproveError(f"cannot read deployment {namespace}/{name}: {exc}") from exc
        pending = _pending_revision(deployment, f"{namespace}/{name}", verb)
        if revision is not None and revision != pending:
            newer = ": a newer deploy landed" if revision < pending else ""
            raise ApproveError(f"the review is for revision {pending}, not {revision}{newer}")
        try:
            await kube.patch(path, approval_patch(decision, revision=pending, approver=approver),
                             content_type=MERGE_PATCH)
        except KubeError as exc:
            raise ApproveError(f"cannot write the approval on deployment {namespace}/{name}: {exc}") from exc
    if decision is Decision.ROLLBACK:
        return f"deployment.apps/{name}: rollback of revision {pending} approved by {approver} (self-declared)"
    return f"deployment.apps/{name}: review of revision {pending} closed without rollback by {approver} (self-declared)"


def _pending_revision(deployment: Mapping[str, Any], target: str, verb: str) -> int:
    """The revision whose review is pending; ApproveError when there is none."""
    nothing = f"no review is pending for deployment {target}: nothing to {verb}"
    try:
        state = read_state(deployment)
    except StateError:
        raise ApproveError(f"{nothing} (its rollguard.io/state annotation cannot be read)") from None
    if state.phase != "review" or state.revision is None:
        raise ApproveError(f"{nothing} (phase: {state.phase})" if state.revision is not None else nothing)
    current = revision_of(deployment)
    if current != state.revision:
        # The state is a stale copy: `rollout undo` and new deploys carry annotations along.
        newer = ": a newer deploy landed" if current is not None and current > state.revision else ""
        raise ApproveError(f"{nothing} (the review was for revision {state.revision}, "
                           f"but the Deployment is at revision {current}{newer})")
    return state.revision


def kubeconfig_user(kubeconfig: Path | None) -> str | None:
    """The user name of the kubeconfig's current context; None when it cannot be told."""
    if kubeconfig is None:
        return None
    try:
        document = yaml.safe_load(kubeconfig.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # connecting reports an unreadable kubeconfig with the real reason
    if not isinstance(document, dict):
        return None
    current = document.get("current-context")
    for entry in document.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == current and isinstance(entry.get("context"), dict):
            user = entry["context"].get("user")
            return clean_approver(user) if isinstance(user, str) else None
    return None
