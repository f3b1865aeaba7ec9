"""Which GitOps object owns a Deployment, what Git revision it applied, and how to suspend and resume it.

Pure: functions of the Deployment's metadata and of the owning object as read from the cluster.

Detection (`detect`), as the tools themselves track what they apply:

- Argo CD, annotation tracking (the default since 3.0): `argocd.argoproj.io/tracking-id:
  APP:apps/Deployment:NS/NAME`, or `APPNS_APP:...` for Applications outside Argo CD's namespace. The
  id must name this Deployment (a copied annotation does not make Argo CD the owner).
- Argo CD, label tracking: `app.kubernetes.io/instance: APP`. Helm charts set this label too, so the
  owner is only `confirmed=False` until its Application is found.
- Flux: `kustomize.toolkit.fluxcd.io/name` + `/namespace` (Kustomization), `helm.toolkit.fluxcd.io/name`
  + `/namespace` (HelmRelease).

Suspending: Argo CD — `spec.syncPolicy.automated` removed, the previous `spec.syncPolicy` kept as JSON in
the `rollguard.io/suspended-sync-policy` annotation (restored exactly on resume); Flux — `spec.suspend:
true` (`false` on resume). Both record the Git revision that was rolled back in
`rollguard.io/suspended-revision`, so that resuming can refuse while Git still says the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRACKING_ID = "argocd.argoproj.io/tracking-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"
ARGOCD_NAMESPACE = "argocd"
"""Where Applications live unless the tracking id names another namespace (Argo CD's default)."""
SAVED_SYNC_POLICY = "rollguard.io/suspended-sync-policy"
SUSPENDED_REVISION = "rollguard.io/suspended-revision"

_KINDS = {
    "Application": ("Argo CD", "argoproj.io/v1alpha1", "applications"),
    "Kustomization": ("Flux", "kustomize.toolkit.fluxcd.io/v1", "kustomizations"),
    "HelmRelease": ("Flux", "helm.toolkit.fluxcd.io/v2", "helmreleases"),
}
_FLUX_LABELS = (("Kustomization", "kustomize.toolkit.fluxcd.io"), ("HelmRelease", "helm.toolkit.fluxcd.io"))

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class GitOpsOwner:
    """The Application / Kustomization / HelmRelease that applies a Deployment."""

    kind: str
    namespace: str
    name: str
    via: str
    """How it was recognised (the annotation or labels), for messages."""
    confirmed: bool = True
    """False for label tracking until the Application was found (the label alone is not proof)."""

    @property
    def tool(self) -> str:
        return _KINDS[self.kind][0]

    @property
    def group_version(self) -> str:
        return _KINDS[self.kind][1]

    @property
    def plural(self) -> str:
        return _KINDS[self.kind][2]

    def describe(self) -> str:
        """`Argo CD Application argocd/backend`."""
        return f"{self.tool} {self.kind} {self.namespace}/{self.name}"

    def view(self) -> dict[str, str]:
        """For the analyses API."""
        return {"tool": self.tool, "kind": self.kind, "namespace": self.namespace, "name": self.name, "via": self.via}


def detect(deployment: Obj, *, argocd_namespace: str = ARGOCD_NAMESPACE) -> GitOpsOwner | None:
    """The owner named by the Deployment's tracking annotation or labels; None when it names none."""
    meta = deployment.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    annotations: Mapping[str, Any] = meta.get("annotations") or {}
    labels: Mapping[str, Any] = meta.get("labels") or {}
    tracking = annotations.get(TRACKING_ID)
    if isinstance(tracking, str):
        app, sep, rest = tracking.partition(":")
        if sep and rest == f"apps/Deployment:{namespace}/{name}" and app:
            app_ns, underscore, app_name = app.partition("_")
            return GitOpsOwner("Application", app_ns if underscore else argocd_namespace,
                               app_name if underscore else app, f"annotation {TRACKING_ID}")
    for kind, prefix in _FLUX_LABELS:
        owner_name, owner_ns = labels.get(f"{prefix}/name"), labels.get(f"{prefix}/namespace")
        if isinstance(owner_name, str) and isinstance(owner_ns, str) and owner_name and owner_ns:
            return GitOpsOwner(kind, owner_ns, owner_name, f"labels {prefix}/name, {prefix}/namespace")
    instance = labels.get(INSTANCE_LABEL)
    if isinstance(instance, str) and instance:
        return GitOpsOwner("Application", argocd_namespace, instance, f"label {INSTANCE_LABEL}", confirmed=False)
    return None


def git_revision(owner: GitOpsOwner, obj: Obj) -> str | None:
    """The Git revision the owner last compared or applied: Argo CD `status.sync.revision` (the first of
    `revisions` for multi-source Applications), Flux `status.lastAppliedRevision` (HelmRelease:
    `status.lastAttemptedRevision`, else the newest `status.history` entry's chart version)."""
    status = obj.get("status") or {}
    if owner.kind == "Application":
        sync = status.get("sync") or {}
        revisions = sync.get("revisions") or []
        value = sync.get("revision") or (revisions[0] if revisions else None)
    elif owner.kind == "Kustomization":
        value = status.get("lastAppliedRevision")
    else:
        history = status.get("history") or []
        value = status.get("lastAppliedRevision") or status.get("lastAttemptedRevision") or (
            history[0].get("chartVersion") if history and isinstance(history[0], Mapping) else None)
    return str(value) if value else None


def git_source(owner: GitOpsOwner, obj: Obj) -> str:
    """Where to revert: `REPO_URL/PATH` (Argo CD) or `GitRepository NS/NAME, path ./x` (Flux)."""
    spec = obj.get("spec") or {}
    if owner.kind == "Application":
        sources = [spec["source"]] if isinstance(spec.get("source"), Mapping) else list(spec.get("sources") or [])
        return ", ".join(f"{str(s.get('repoURL', '?')).rstrip('/')}/{str(s.get('path', '')).strip('/')}".rstrip("/")
                         for s in sources if isinstance(s, Mapping)) or "(no source)"
    if owner.kind == "Kustomization":
        ref, path = spec.get("sourceRef") or {}, spec.get("path") or "./"
    else:
        chart = (spec.get("chart") or {}).get("spec") or {}
        ref, path = chart.get("sourceRef") or {}, chart.get("chart") or "?"
    ref_ns = ref.get("namespace") or owner.namespace
    return f"{ref.get('kind', 'GitRepository')} {ref_ns}/{ref.get('name', '?')}, path {path}"


def is_suspended(owner: GitOpsOwner, obj: Obj) -> bool:
    """Whether the tool would leave a rollback alone: Argo CD automated sync off, Flux `spec.suspend`."""
    spec = obj.get("spec") or {}
    if owner.kind == "Application":
        automated = (spec.get("syncPolicy") or {}).get("automated")
        return not isinstance(automated, Mapping) or automated.get("enabled", True) is False
    return spec.get("suspend") is True


def suspended_by_rollguard(obj: Obj) -> bool:
    return SUSPENDED_REVISION in ((obj.get("metadata") or {}).get("annotations") or {})


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def suspend_patch(owner: GitOpsOwner, obj: Obj, *, revision: str | None) -> list[dict[str, Any]]:
    """A JSON patch that stops the owner from reverting a rollback and remembers how to resume.

    The `test` of the resourceVersion makes it fail (409/422) if the object changed since it was read;
    a second suspend (after a crash) keeps the first one's remembered policy.
    """
    meta = obj.get("metadata") or {}
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    if not meta.get("annotations"):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(SUSPENDED_REVISION)}",
                "value": revision or ""})
    spec = obj.get("spec") or {}
    if owner.kind == "Application":
        if SAVED_SYNC_POLICY not in (meta.get("annotations") or {}):
            ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(SAVED_SYNC_POLICY)}",
                        "value": json.dumps(spec.get("syncPolicy"), sort_keys=True, separators=(",", ":"))})
        if "automated" in (spec.get("syncPolicy") or {}):
            ops.append({"op": "remove", "path": "/spec/syncPolicy/automated"})
    else:
        ops.append({"op": "add", "path": "/spec/suspend", "value": True})
    return ops


def resume_patch(owner: GitOpsOwner, obj: Obj) -> list[dict[str, Any]]:
    """A JSON patch restoring the remembered sync policy (Argo CD) or `suspend: false` (Flux), and
    removing rollguard's annotations. ValueError when the remembered policy cannot be read."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    if owner.kind == "Application":
        saved = annotations.get(SAVED_SYNC_POLICY)
        if saved is None:
            raise ValueError(f"{owner.describe()} has no {SAVED_SYNC_POLICY} annotation: rollguard did not suspend it")
        try:
            policy = json.loads(saved)
        except ValueError:
            raise ValueError(f"{owner.describe()}: {SAVED_SYNC_POLICY} is not JSON: {saved[:80]!r}") from None
        if policy is None:
            if "syncPolicy" in (obj.get("spec") or {}):
                ops.append({"op": "remove", "path": "/spec/syncPolicy"})
        else:
            ops.append({"op": "add", "path": "/spec/syncPolicy", "value": policy})
        ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(SAVED_SYNC_POLICY)}"})
    else:
        ops.append({"op": "add", "path": "/spec/suspend", "value": False})
    if SUSPENDED_REVISION in annotations:
        ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(SUSPENDED_REVISION)}"})
    return ops


def reapplied_note(owner: GitOpsOwner, revision: int | None, *, suspend_first: bool) -> str:
    """The review's text when the owner re-applied a template rollguard rolled back (from `revision`)."""
    return (f"{owner.describe()} re-applied the template rollguard rolled back (revision "
            f"{revision if revision is not None else '?'}): rollguard does not undo it again. Revert it in Git, "
            "or approve below to roll back once more" + (" (its sync is suspended first)." if suspend_first else "."))
