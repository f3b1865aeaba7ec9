"""Least privilege, checked against what the daemon really does: every API request it makes in a
realistic scenario must be granted by the Helm chart's RBAC, and the chart must grant nothing it
did not use — except the few grants the chart README justifies for paths this scenario does not
take (listed below with their reason).

The daemon's requests are told apart from the test's own (kubectl) by giving the daemon its own
front door to the simulated API server (`tests/replicakit.py`): the same server code over the same
Store, with an audit log of its own. The audit is server-side: nothing of the daemon is faked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from sim.apiserver import AuditRecord
from sim.demo.stack import running_stack
from sim.resources import JOBS
from sim.workload import WorkloadLogs
from tests.e2ekit import RULES, deploy, eventually, image_of, serving_v1, state_of
from tests.replicakit import FrontDoor

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(90)]

CHART = Path(__file__).resolve().parent.parent / "helm" / "rollguard"
RELEASE = "rollguard"
RELEASE_NAMESPACE = "default"
"""The stack's daemon keeps its Lease in `default`: in the chart that is the release namespace."""

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# Granted, and not used by this scenario, on purpose: each reason is the chart README's (RBAC table).
JUSTIFIED_UNUSED: dict[Grant, str] = {
    ("", "events", "patch"): "bump count of a repeated Event (no Event repeats in this scenario)",
}

MIGRATION_JOB = """
  onRollback:
    job: {command: [alembic, downgrade, "-1"], timeout: 30s}
"""
"""Added to the e2e policy so the scenario takes the optional pre-rollback Job path too."""

POLICY_PAGERDUTY = """
  notify:
    pagerduty:
      routingKeyFrom: {secret: rollguard, key: pagerduty-routing-key}
"""
"""Added too, so the daemon reads a policy's own Secret (the shipped example policy does the same)."""


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` with Helm's own engine, as tests/test_chart.py renders the chart."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def rules_in(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Every rule that applies to a request in `namespace`: the ClusterRoles' and that namespace's Roles'."""
    return [rule for o in objects
            if o["kind"] == "ClusterRole" or (o["kind"] == "Role" and o["metadata"]["namespace"] == namespace)
            for rule in o["rules"]]


def roles_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in {"ClusterRole", "Role"}]


def allowed(rules: list[dict[str, Any]], grant: Grant, name: str) -> bool:
    group, resource, verb = grant
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)


def granted(rules: list[dict[str, Any]]) -> set[Grant]:
    return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}


def grant_of(record: AuditRecord) -> Grant:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    return record.api_group, resource, record.verb


def readme_reasons() -> dict[Grant, str]:
    section = (CHART / "README.md").read_text().split("## RBAC", 1)[1].split("\n## ", 1)[0]
    reasons: dict[Grant, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in {"verb", ""} and not set(cells[0]) <= {"-"}:
            name, _, group = cells[1].partition(".")
            reasons[(group, name, cells[0])] = cells[4]
    return reasons


async def test_the_chart_grants_exactly_what_the_daemon_uses(tmp_path: Path) -> None:
    audit: list[AuditRecord] = []
    rules = tmp_path / "rules"
    rules.mkdir()
    policy = (RULES / "backend.yaml").read_text().rstrip() + "\n" + MIGRATION_JOB + POLICY_PAGERDUTY
    (rules / "backend.yaml").write_text(policy)
    async with running_stack(workdir=tmp_path, rules_dir=rules, leader_election=True, start_daemon=False) as stack, \
            FrontDoor(stack.cluster.store, tmp_path, audit=audit,
                      logs=WorkloadLogs(stack.cluster.store, stack.cluster.clock)) as door:
        stack.settings = dataclasses.replace(stack.settings, kubeconfig=door.kubeconfig, lease_duration=3.0)
        await stack.start_daemon()
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="rollguard to roll backend back to v1")
        await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30, stack=stack,
                         what="the rollback to complete")
        assert stack.cluster.store.list_objects(JOBS, "staging")[0], "the migration Job did not run"
        await eventually(lambda: any(e.get("payload", {}).get("summary", "").startswith(
                             "[staging/backend rev 2] Rolled back") for e in stack.pagerduty.events),
                         timeout=30, stack=stack, what="the policy's own PagerDuty page")
        await stack.stop_daemon()  # a graceful stop releases the Lease: that request counts too
    assert audit, "the daemon made no API request through its own front door"

    # The values the daemon above runs with: its namespace, its policy (the chart checks it needs Prometheus
    # and names Secret rollguard), the Job grants for the pre-rollback Job, and that Secret granted by name.
    objects = render({"watch": {"namespaces": list(stack.settings.namespaces)}, "rollbackJobs": {"enabled": True},
                      "prometheus": {"url": "http://prometheus.monitoring:9090"}, "rules": {"backend.yaml": policy},
                      "notify": {"policySecrets": ["rollguard"]}})
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}], "nothing cluster-wide"
    lease_name = stack.settings.lease_name
    assert lease_name == RELEASE, "the chart names the Lease after the release; the daemon must use that name"

    denied = sorted({(grant_of(r), r.namespace, r.name) for r in audit
                     if not allowed(rules_in(objects, r.namespace), grant_of(r), r.name)})
    assert denied == [], f"the chart's RBAC would deny these requests of the daemon: {denied}"
    assert {r.namespace for r in audit if r.resource in {"leases", "secrets"}} == {RELEASE_NAMESPACE}, (
        "the Lease and the policies' Secrets are only granted in the release namespace")
    assert {(r.verb, r.name) for r in audit if r.resource == "secrets"} == {("get", "rollguard")}

    used = {grant_of(r) for r in audit}
    unused = granted([rule for role in roles_of(objects) for rule in role["rules"]]) - used
    unjustified = sorted(unused - set(JUSTIFIED_UNUSED))
    assert unjustified == [], f"the chart grants what the daemon never used (and no reason is listed): {unjustified}"
    reasons = readme_reasons()
    for grant, why in JUSTIFIED_UNUSED.items():
        assert grant in reasons, f"{grant} is excused here ({why}) but the chart README does not list it"
    stale = sorted(set(JUSTIFIED_UNUSED) & used)
    assert stale == [], f"these are used after all: drop them from JUSTIFIED_UNUSED: {stale}"
