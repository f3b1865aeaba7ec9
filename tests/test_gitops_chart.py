"""The chart grants GitOps permissions only when asked to (`gitops.enabled`), and only these."""

from __future__ import annotations

from tests.test_chart import NAMESPACE, bound_to_service_account, grants, render

GITOPS_GRANTS = {(group, resource, verb) for group, resource in (
    ("argoproj.io", "applications"), ("kustomize.toolkit.fluxcd.io", "kustomizations"),
    ("helm.toolkit.fluxcd.io", "helmreleases")) for verb in ("get", "patch")}


def gitops_roles(values: dict[str, object]) -> list[dict[str, object]]:
    rendered = render(values)
    return [r for r in rendered.of_kind("Role") + rendered.of_kind("ClusterRole")
            if grants(r) & GITOPS_GRANTS]


def test_no_gitops_permission_by_default() -> None:
    assert gitops_roles({}) == []
    assert gitops_roles({"watch": {"clusterWide": True}}) == []


def test_gitops_enabled_grants_get_and_patch_in_the_gitops_namespaces_only() -> None:
    values: dict[str, object] = {"gitops": {"enabled": True, "namespaces": ["argocd", "flux-system"]}}
    rendered = render(values)
    roles = gitops_roles(values)
    assert [(r["kind"], r["metadata"]["namespace"]) for r in roles] == [("Role", "argocd"),  # type: ignore[index]
                                                                         ("Role", "flux-system")]
    for role in roles:
        assert grants(role) == GITOPS_GRANTS, role
        assert bound_to_service_account(rendered, role), role
    assert rendered.of_kind("RoleBinding")[-1]["subjects"][0]["namespace"] == NAMESPACE


def test_gitops_objects_are_not_created_when_rbac_is_managed_elsewhere() -> None:
    assert gitops_roles({"rbac": {"create": False}, "gitops": {"enabled": True}}) == []


def test_argocd_namespace_reaches_the_daemon_and_is_granted() -> None:
    values: dict[str, object] = {"gitops": {"enabled": True, "namespaces": ["flux-system"],
                                            "argocdNamespace": "cd"}}
    rendered = render(values)
    assert [r["metadata"]["namespace"] for r in gitops_roles(values)] == ["flux-system", "cd"]  # type: ignore[index]
    container = rendered.of_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ROLLGUARD_ARGOCD_NAMESPACE", "value": "cd"} in container["env"], container["env"]
    defaults = render({}).of_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ROLLGUARD_ARGOCD_NAMESPACE", "value": "argocd"} in defaults["env"]
