"""The daemon's side of GitOps ownership: which owner each Deployment names (recorded by the reconciler),
the owner as read from the cluster, and its suspension through the one writer.

Reads are not fenced; the suspension is (`ClusterWriter.patch_gitops_owner`). A missing permission or
owner is not an error here: it becomes a sentence in the page (`OwnerFacts.problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.gitops.owner import (
    ARGOCD_NAMESPACE,
    SUSPENDED_REVISION,
    GitOpsOwner,
    detect,
    git_revision,
    git_source,
    is_suspended,
    suspend_patch,
)
from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.rules.model import GitOpsMode
from daemon.writer import ClusterWriter, NotWriting

log = structlog.get_logger("rollguard.gitops")

Key = tuple[str, str]


@dataclass(frozen=True)
class OwnerFacts:
    """The owner and what was read of it (`obj` None when it could not be read: `problem` says why)."""

    owner: GitOpsOwner
    obj: Mapping[str, Any] | None
    problem: str = ""

    @property
    def revision(self) -> str | None:
        """The Git revision to revert: the one rollguard recorded when it suspended the owner (so a
        successor replica names the same one), else the one the owner last compared or applied."""
        if self.obj is None:
            return None
        recorded = ((self.obj.get("metadata") or {}).get("annotations") or {}).get(SUSPENDED_REVISION)
        return str(recorded) if recorded else git_revision(self.owner, self.obj)

    @property
    def source(self) -> str:
        return git_source(self.owner, self.obj) if self.obj is not None else "(its source could not be read)"

    def revision_text(self) -> str:
        """`Git revision 3f2a9c1 in https://git.example/shop.git/backend` (or what is unknown)."""
        revision = self.revision
        return f"Git revision {revision or '(unknown)'} in {self.source}"


def rollback_note(facts: OwnerFacts, mode: GitOpsMode, key: Key, problem: str = "") -> str:
    """The sentence a rollback's page carries for a GitOps-owned Deployment: what the SRE does next.
    `problem`: why the owner is not suspended ("" when it is, or the mode is `undo`)."""
    owner = facts.owner.describe()
    if mode is GitOpsMode.UNDO:
        return f"{owner} may re-apply it (policy gitops: undo): revert {facts.revision_text()}"
    if problem:
        return (f"{problem}; it may re-apply the bad template (rollguard will not undo it again). Revert "
                f"{facts.revision_text()}")
    return (f"Rolled back in the cluster; {owner} is suspended. Revert {facts.revision_text()} and resume sync "
            f"with `rollguard resume {key[0]}/{key[1]}`")


class GitOps:
    """Owners by Deployment, their lookup and suspension."""

    def __init__(self, kube: KubeClient, writer: ClusterWriter, *, argocd_namespace: str = ARGOCD_NAMESPACE) -> None:
        self._kube = kube
        self._writer = writer
        self._argocd_namespace = argocd_namespace
        self._owners: dict[Key, GitOpsOwner] = {}

    def observe(self, key: Key, deployment: Mapping[str, Any] | None) -> None:
        """Record the owner the Deployment names now (forgotten when it names none, or is deleted)."""
        owner = detect(deployment, argocd_namespace=self._argocd_namespace) if deployment is not None else None
        if owner is None:
            self._owners.pop(key, None)
        else:
            self._owners[key] = owner

    def owner(self, key: Key) -> GitOpsOwner | None:
        return self._owners.get(key)

    async def read(self, key: Key) -> OwnerFacts | None:
        """The owner of the Deployment as read now; None when it has none (or label tracking names an
        Application that does not exist: then Argo CD does not own it)."""
        owner = self._owners.get(key)
        if owner is None:
            return None
        try:
            obj = await self._kube.get(api_path(owner.group_version, owner.plural, owner.namespace, owner.name))
        except KubeError as exc:
            if not owner.confirmed and getattr(exc, "code", None) == 404:
                return None
            log.warning("cannot read the GitOps owner", owner=owner.describe(), error=str(exc))
            return OwnerFacts(owner, None, f"rollguard cannot read {owner.describe()}: {exc}")
        return OwnerFacts(owner, obj)

    async def note_after_undo(self, key: Key, mode: GitOpsMode) -> str:
        """`rollback_note` for an undo announced after a restart, from the owner as read now (and the
        revision rollguard recorded on it); "" when the Deployment has no GitOps owner."""
        facts = await self.read(key)
        if facts is None:
            return ""
        problem = "" if facts.obj is not None and is_suspended(facts.owner, facts.obj) else (
            facts.problem or f"{facts.owner.describe()} is not suspended")
        return rollback_note(facts, mode, key, problem)

    async def suspend(self, facts: OwnerFacts) -> str:
        """Stop the owner from reverting a rollback; returns "" on success, else what went wrong."""
        owner = facts.owner
        if facts.obj is None:
            return facts.problem
        if is_suspended(owner, facts.obj):
            return ""
        try:
            await self._writer.patch_gitops_owner(
                api_path(owner.group_version, owner.plural, owner.namespace, owner.name),
                suspend_patch(owner, facts.obj, revision=facts.revision))
        except (KubeError, NotWriting) as exc:
            log.warning("cannot suspend the GitOps owner", owner=owner.describe(), error=str(exc))
            return f"rollguard could not suspend {owner.describe()}: {exc}"
        log.info("suspended the GitOps owner", owner=owner.describe(), revision=facts.revision)
        return ""
