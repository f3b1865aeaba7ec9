"""Recognising the GitOps owner of a Deployment, the revision it names, and the suspend/resume patches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.gitops.owner import GitOpsOwner, detect, git_revision, git_source, resume_patch, suspend_patch
from daemon.rules.loader import load_file
from daemon.rules.model import GitOpsMode
from sim.patch import json_patch


def deployment(*, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"namespace": "staging", "name": "backend", "annotations": annotations or {},
                         "labels": labels or {}}}


@pytest.mark.parametrize(("meta", "expected"), [
    ({"annotations": {"argocd.argoproj.io/tracking-id": "backend:apps/Deployment:staging/backend"}},
     GitOpsOwner("Application", "argocd", "backend", "annotation argocd.argoproj.io/tracking-id")),
    ({"annotations": {"argocd.argoproj.io/tracking-id": "team-a_shop:apps/Deployment:staging/backend"}},
     GitOpsOwner("Application", "team-a", "shop", "annotation argocd.argoproj.io/tracking-id")),
    ({"annotations": {"argocd.argoproj.io/tracking-id": "backend:apps/Deployment:staging/other"}}, None),
    ({"labels": {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
     GitOpsOwner("Kustomization", "flux-system", "apps",
                 "labels kustomize.toolkit.fluxcd.io/name, kustomize.toolkit.fluxcd.io/namespace")),
    ({"labels": {"helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": "apps"}},
     GitOpsOwner("HelmRelease", "apps", "web", "labels helm.toolkit.fluxcd.io/name, helm.toolkit.fluxcd.io/namespace")),
    ({"labels": {"app.kubernetes.io/instance": "backend"}},
     GitOpsOwner("Application", "argocd", "backend", "label app.kubernetes.io/instance", confirmed=False)),
    ({"labels": {"app": "backend"}}, None),
], ids=["tracking-id", "apps-in-any-namespace", "copied-tracking-id", "kustomization", "helmrelease",
        "instance-label", "none"])
def test_detect(meta: dict[str, dict[str, str]], expected: GitOpsOwner | None) -> None:
    assert detect(deployment(**meta)) == expected


APP = GitOpsOwner("Application", "argocd", "backend", "")
POLICY = {"automated": {"selfHeal": True, "prune": True}, "syncOptions": ["CreateNamespace=true"]}


def test_argo_cd_suspend_then_resume_restores_the_exact_sync_policy() -> None:
    app = {"metadata": {"name": "backend", "namespace": "argocd", "resourceVersion": "7"},
           "spec": {"source": {"repoURL": "https://git.example/shop.git/", "path": "/apps/backend"},
                    "syncPolicy": POLICY},
           "status": {"sync": {"status": "Synced", "revision": "3f2a"}}}
    assert git_revision(APP, app) == "3f2a"
    assert git_source(APP, app) == "https://git.example/shop.git/apps/backend"
    suspended = json_patch(app, suspend_patch(APP, app, revision="3f2a"))
    assert suspended["spec"]["syncPolicy"] == {"syncOptions": ["CreateNamespace=true"]}
    assert suspended["metadata"]["annotations"] == {
        "rollguard.io/suspended-revision": "3f2a",
        "rollguard.io/suspended-sync-policy": json.dumps(POLICY, sort_keys=True, separators=(",", ":"))}
    resumed = json_patch(suspended, resume_patch(APP, suspended))
    assert resumed["spec"] == app["spec"]
    assert resumed["metadata"]["annotations"] == {}


def test_flux_revision_and_source() -> None:
    owner = GitOpsOwner("Kustomization", "flux-system", "apps", "")
    obj = {"spec": {"path": "./staging", "sourceRef": {"kind": "GitRepository", "name": "deploy"}},
           "status": {"lastAppliedRevision": "main@sha1:3f2a"}}
    assert (git_revision(owner, obj), git_source(owner, obj)) == (
        "main@sha1:3f2a", "GitRepository flux-system/deploy, path ./staging")


def test_policy_gitops_mode(tmp_path: Path) -> None:
    base = (Path(__file__).parent / "data" / "e2e" / "rules-health" / "backend.yaml").read_text()
    (tmp_path / "ok.yaml").write_text(base + "  gitops: suspend\n")
    assert [p.gitops for p in load_file(tmp_path / "ok.yaml").policies] == [GitOpsMode.SUSPEND]
    (tmp_path / "default.yaml").write_text(base)
    assert [p.gitops for p in load_file(tmp_path / "default.yaml").policies] == [GitOpsMode.PAGE]
    (tmp_path / "bad.yaml").write_text(base + "  gitops: revert\n")
    errors = load_file(tmp_path / "bad.yaml").errors
    assert [(e.line, e.field, e.message) for e in errors] == [
        (28, "spec.gitops", '"revert" is not a choice here (use page, suspend or undo)')], errors


def test_argocd_namespace_setting_decides_where_applications_are_found() -> None:
    from daemon.settings import LogSettings, SettingsError, run_settings

    def settings(env: dict[str, str]) -> str:
        return run_settings(rules="/rules", kubeconfig=None, namespaces=(), dry_run=False, http_listen=None,
                            log=LogSettings(), env=env).argocd_namespace

    assert settings({}) == "argocd"
    namespace = settings({"ROLLGUARD_ARGOCD_NAMESPACE": "cd"})
    assert namespace == "cd"
    tracked = deployment(annotations={"argocd.argoproj.io/tracking-id": "backend:apps/Deployment:staging/backend"})
    assert detect(tracked, argocd_namespace=namespace) == GitOpsOwner(
        "Application", "cd", "backend", "annotation argocd.argoproj.io/tracking-id")
    with pytest.raises(SettingsError) as raised:
        settings({"ROLLGUARD_ARGOCD_NAMESPACE": "Argo_CD"})
    assert str(raised.value) == ("ROLLGUARD_ARGOCD_NAMESPACE: 'Argo_CD' is not a namespace name (lower-case letters, "
                                 "digits, '-')")
