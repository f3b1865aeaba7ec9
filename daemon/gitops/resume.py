"""`rollguard resume NAMESPACE/DEPLOYMENT [--force]`: give the Deployment back to its GitOps tool.

Run by the SRE (with their kubeconfig) once the bad change is reverted in Git. It finds the owner the
Deployment names, and restores what rollguard's suspension changed (`daemon.gitops.owner.resume_patch`):
Argo CD's exact previous `spec.syncPolicy`, Flux's `spec.suspend: false`.

It refuses while Git still holds the rolled-back revision — the tool would re-apply the bad template at
once — unless `--force`: Argo CD keeps comparing while automated sync is off, so `status.sync.revision`
is Git's head; Flux does not reconcile a suspended object, so Git's head is its source's
`status.artifact.revision` (the GitRepository, or whatever `spec.sourceRef` names).

Exceptions: `ResumeError` — refused or not written; the message says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio.config import ConfigException

from daemon.gitops.owner import (
    ARGOCD_NAMESPACE,
    SUSPENDED_REVISION,
    GitOpsOwner,
    detect,
    git_revision,
    resume_patch,
    suspended_by_rollguard,
)
from daemon.kube.client import JSON_PATCH, KubeClient, KubeError, api_path

_FLUX_SOURCES = {"GitRepository": "gitrepositories", "OCIRepository": "ocirepositories", "Bucket": "buckets",
                 "HelmChart": "helmcharts", "HelmRepository": "helmrepositories"}


class ResumeError(Exception):
    """The resume was refused or could not be written; the message says why."""


def _same_revision(suspended: str, current: str) -> bool:
    """Whether two revisions name the same commit (`main@sha1:abc…` and `abc…` do)."""
    def commit(text: str) -> str:
        return text.rpartition(":")[2].rpartition("@")[2]
    return bool(suspended) and commit(suspended) == commit(current)


async def _git_head(kube: KubeClient, owner: GitOpsOwner, obj: Mapping[str, Any]) -> str | None:
    """What Git holds now, as the tool sees it (see the module docstring); None when it cannot be told."""
    if owner.kind == "Application":
        return git_revision(owner, obj)
    spec = obj.get("spec") or {}
    ref = spec.get("sourceRef") if owner.kind == "Kustomization" else (
        ((spec.get("chart") or {}).get("spec") or {}).get("sourceRef"))
    if not isinstance(ref, Mapping) or ref.get("kind") not in _FLUX_SOURCES:
        return None
    plural = _FLUX_SOURCES[str(ref["kind"])]
    try:
        source = await kube.get(api_path("source.toolkit.fluxcd.io/v1", plural,
                                         str(ref.get("namespace") or owner.namespace), str(ref.get("name"))))
    except KubeError:
        return None
    revision = ((source.get("status") or {}).get("artifact") or {}).get("revision")
    return str(revision) if revision else None


async def resume(target: str, *, kubeconfig: Path | None, force: bool = False,
                 argocd_namespace: str = ARGOCD_NAMESPACE) -> str:
    """Restore the owner's sync settings; returns the line to print."""
    from daemon.approve import ApproveError, parse_target

    try:
        namespace, name = parse_target(target)
    except ApproveError as exc:
        raise ResumeError(str(exc)) from None
    try:
        kube = await KubeClient.connect(kubeconfig)
    except (ConfigException, OSError) as exc:
        raise ResumeError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
    async with kube:
        try:
            deployment = await kube.get(api_path("apps/v1", "deployments", namespace, name))
        except KubeError as exc:
            raise ResumeError(f"cannot read deployment {namespace}/{name}: {exc}") from exc
        owner = detect(deployment, argocd_namespace=argocd_namespace)
        if owner is None:
            raise ResumeError(f"deployment {namespace}/{name} names no Argo CD Application or Flux object: "
                              "nothing to resume")
        path = api_path(owner.group_version, owner.plural, owner.namespace, owner.name)
        try:
            obj = await kube.get(path)
        except KubeError as exc:
            raise ResumeError(f"cannot read {owner.describe()}: {exc}") from exc
        if not suspended_by_rollguard(obj):
            raise ResumeError(f"{owner.describe()} was not suspended by rollguard (no {SUSPENDED_REVISION} "
                              "annotation): nothing to resume")
        suspended = str(((obj.get("metadata") or {}).get("annotations") or {}).get(SUSPENDED_REVISION, ""))
        head = await _git_head(kube, owner, obj)
        if not force:
            if head is None:
                raise ResumeError(f"cannot tell which revision Git holds for {owner.describe()}; check that "
                                  f"{suspended or 'the bad revision'} is reverted, then run again with --force")
            if _same_revision(suspended, head):
                raise ResumeError(f"Git still holds revision {head}, the one rollguard rolled back: resuming "
                                  f"{owner.describe()} would re-apply it. Revert it in Git first (or pass --force)")
        try:
            patch = resume_patch(owner, obj)
        except ValueError as exc:
            raise ResumeError(str(exc)) from None
        try:
            await kube.patch(path, patch, content_type=JSON_PATCH)
        except KubeError as exc:
            raise ResumeError(f"cannot write {owner.describe()}: {exc}") from exc
    what = "sync policy restored" if owner.kind == "Application" else "suspend: false"
    return f"{owner.describe()}: {what} (Git at {head or 'an unchecked revision'}); it owns {namespace}/{name} again"
