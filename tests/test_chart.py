"""The Helm chart (helm/rollguard), rendered and linted by Helm's own Go engine, checked against Kubernetes.

Helm runs in-process through helm-python-sdk (`helm_python`: Helm v4's SDK behind a C ABI, no helm binary,
no network: `Chart.render` is `helm template`, `lint` is `helm lint`, and rendering applies
values.schema.json exactly as `helm install` does). Every rendered object is validated with
kubernetes-validate against the OpenAPI schemas bundled for Kubernetes 1.33, in strict mode (unknown fields
fail). The RBAC table below is the contract: the chart README carries the same table and any widening fails.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from daemon.measure import can_run
from daemon.rules.loader import load_file
from daemon.settings import ActionLimits, LogSettings, RunSettings, run_settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "rollguard"
KUBE_VERSION = "1.33.0"
RELEASE = "rollguard"
NAMESPACE = "ops"

Obj = dict[str, Any]

# --- the RBAC contract -----------------------------------------------------------------------------------
# (apiGroup, resource, verb) -> (scope, kept in dryRun). "watched": the ClusterRole (cluster-wide mode) or
# the Role in each watched namespace; "release namespace": the Lease Role beside the daemon, in both modes.
WATCHED, RELEASE_NS = "watched", "release namespace"
RBAC: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("apps", "deployments", "get"): (WATCHED, True),
    ("apps", "deployments", "list"): (WATCHED, True),
    ("apps", "deployments", "watch"): (WATCHED, True),
    ("apps", "deployments", "patch"): (WATCHED, False),
    ("apps", "replicasets", "get"): (WATCHED, True),
    ("apps", "replicasets", "list"): (WATCHED, True),
    ("apps", "replicasets", "watch"): (WATCHED, True),
    ("", "pods", "list"): (WATCHED, True),
    ("", "pods/log", "get"): (WATCHED, True),
    ("", "events", "create"): (WATCHED, True),
    ("", "events", "patch"): (WATCHED, True),
    ("batch", "jobs", "create"): (WATCHED, False),
    ("batch", "jobs", "get"): (WATCHED, True),
    ("coordination.k8s.io", "leases", "create"): (RELEASE_NS, True),
    ("coordination.k8s.io", "leases", "get"): (RELEASE_NS, True),
    ("coordination.k8s.io", "leases", "update"): (RELEASE_NS, True),
    ("", "secrets", "get"): (RELEASE_NS, True),
}


# Granted only with rollbackJobs.enabled: no Job-creating power unless a policy needs it.
JOB_GRANTS = {("batch", "jobs", "create"), ("batch", "jobs", "get")}


# Granted only on the Secrets named in notify.policySecrets, by a Role of its own (resourceNames).
SECRET_GRANTS = {("", "secrets", "get")}


def expected_rbac(scope: str, *, dry_run: bool, jobs: bool = False) -> set[tuple[str, str, str]]:
    return {grant for grant, (where, kept) in RBAC.items()
            if where == scope and (kept or not dry_run) and (jobs or grant not in JOB_GRANTS)
            and grant not in SECRET_GRANTS}


# --- rendering -------------------------------------------------------------------------------------------
SLACK_TOKEN = "xoxb-0000-test-slack-token-never-leak"
WEBHOOK_URL = "https://hooks.slack.invalid/services/T000/B000/never-leak"
ROUTING_KEY = "R0UT1NGKEY-never-leak-0123456789ab"

SCENARIOS: dict[str, Obj] = {
    "default": {},
    "cluster-wide": {"watch": {"clusterWide": True}},
    "cluster-wide-dry-run": {"dryRun": True, "watch": {"clusterWide": True}},
    "namespaced": {"watch": {"namespaces": ["staging", "production"]}},
    "dry-run": {"dryRun": True},
    "dry-run-namespaced": {"dryRun": True, "watch": {"namespaces": ["staging"]}},
    "existing-secret": {"secrets": {"existingSecret": "rollguard-notifiers"}},
    "created-secret": {"secrets": {"create": True, "values": {
        "slackToken": SLACK_TOKEN, "slackWebhookUrl": WEBHOOK_URL, "pagerdutyRoutingKey": ROUTING_KEY}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "single-replica": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "existing-rules": {"existingRulesConfigMap": "team-rules"},
    "rollback-jobs": {"rollbackJobs": {"enabled": True}, "watch": {"clusterWide": True}},
    "rollback-jobs-dry-run": {"rollbackJobs": {"enabled": True}, "dryRun": True, "watch": {"namespaces": ["staging"]}},
    "network-policy-peers": {"networkPolicy": {"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}},
    "no-network-policy": {"networkPolicy": {"enabled": False}},
    "prometheus-secured": {"prometheus": {"url": "https://prometheus.monitoring:9091",
                                          "bearerTokenSecret": {"name": "prometheus-client", "key": "token"},
                                          "caSecret": {"name": "prometheus-client", "key": "ca.crt"}}},
    "api-token": {"api": {"tokenSecret": {"name": "rollguard-api", "key": "api-token"}}},
    "policy-secrets": {"notify": {"policySecrets": ["lobby-pagerduty", "lobby-slack"]}},
    "limits": {"rollback": {"maxPerWindow": 1, "window": 7200}, "leaderElection": {"leaseDurationSeconds": 30,
                                                                                   "writeMargin": 5}},
}


class Rendered:
    """One `helm template`: the objects, parsed, and NOTES.txt as the user sees it after install."""

    def __init__(self, manifests: Mapping[str, str]) -> None:
        self.notes = manifests.get("rollguard/templates/NOTES.txt", "")
        self.objects: list[Obj] = [
            doc
            for path, text in sorted(manifests.items())
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> Obj:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def pod_spec(self) -> Obj:
        spec: Obj = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Obj:
        containers: list[Obj] = self.pod_spec["containers"]
        assert [c["name"] for c in containers] == ["rollguard"]
        return containers[0]

    @property
    def env(self) -> dict[str, Obj]:
        return {e["name"]: e for e in self.container["env"]}


def render(values: Obj | None = None) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


def strings_in(node: Any) -> Iterator[str]:
    """Every string anywhere in a parsed manifest (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def grants(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def bound_to_service_account(rendered: Rendered, role: Obj) -> bool:
    """Whether a binding of the same scope ties this role to the chart's ServiceAccount."""
    binding_kind = "ClusterRoleBinding" if role["kind"] == "ClusterRole" else "RoleBinding"
    sa = rendered.one("ServiceAccount")["metadata"]
    for binding in rendered.of_kind(binding_kind):
        same_place = binding["metadata"].get("namespace") == role["metadata"].get("namespace")
        ref = binding["roleRef"]
        if same_place and ref["kind"] == role["kind"] and ref["name"] == role["metadata"]["name"]:
            subjects: list[Obj] = binding["subjects"]
            return subjects == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    return False


# --- Helm's own checks and the Kubernetes schemas ---------------------------------------------------------
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_reports_no_warning_or_error(scenario: str) -> None:
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [], report
    # severity 1 is info; Helm's only one here is "icon is recommended" (the project has no icon yet).
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_for_kubernetes_1_33(scenario: str) -> None:
    rendered = render(SCENARIOS[scenario])
    assert rendered.objects, "nothing rendered"
    for obj in rendered.objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: kubernetes-validate bundles only built-in kinds (see test_service_monitor_*)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {where} is not valid Kubernetes {KUBE_VERSION}: {exc.message} "
                        f"at {'/'.join(map(str, exc.path))}")
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"].get("namespace"), f"{where} has no namespace (kubectl -n would misplace it)"


# --- the Deployment -------------------------------------------------------------------------------------
def test_pods_run_locked_down() -> None:
    rendered = render()
    pod = rendered.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = rendered.container["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["runAsUser"] == 65532
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    # The read-only root filesystem leaves Python one writable place for tempfiles.
    mounts = {m["mountPath"]: m["name"] for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_only_the_pod_mounts_the_api_token_and_no_service_links_pollute_settings() -> None:
    rendered = render()
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert rendered.pod_spec["automountServiceAccountToken"] is True
    assert rendered.pod_spec["serviceAccountName"] == rendered.one("ServiceAccount")["metadata"]["name"]
    # The Service is named "rollguard": service links would inject ROLLGUARD_PORT & co. into the settings.
    assert rendered.pod_spec["enableServiceLinks"] is False


def test_two_replicas_with_leader_election_spread_over_nodes() -> None:
    rendered = render()
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = rendered.env
    assert env["ROLLGUARD_LEADER_ELECTION"]["value"] == "true"
    assert env["ROLLGUARD_LEASE_NAME"]["value"] == RELEASE
    assert env["ROLLGUARD_LEASE_DURATION"]["value"] == "15"
    assert env["ROLLGUARD_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["ROLLGUARD_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    preferred = rendered.pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"][
        "matchLabels"]
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"] == deployment["spec"]["selector"]


def test_a_single_replica_gets_no_pdb_that_would_block_node_drains() -> None:
    rendered = render(SCENARIOS["single-replica"])
    assert rendered.one("Deployment")["spec"]["replicas"] == 1
    assert rendered.of_kind("PodDisruptionBudget") == []
    assert rendered.env["ROLLGUARD_LEADER_ELECTION"]["value"] == "false"
    assert [r["metadata"]["name"] for r in rendered.of_kind("Role")] == [RELEASE], "no Lease Role without election"


def test_probes_and_service_use_the_daemons_http_port() -> None:
    rendered = render()
    ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert ports == {"http-metrics": 8080}
    assert rendered.env["ROLLGUARD_HTTP_LISTEN"]["value"] == "0.0.0.0:8080"
    assert rendered.container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert rendered.container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}]
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_settings_reach_the_daemon_as_environment() -> None:
    env = render({"watch": {"namespaces": ["staging", "production"]}, "logLevel": "debug"}).env
    assert env["ROLLGUARD_NAMESPACES"]["value"] == "staging,production"
    assert env["ROLLGUARD_DRY_RUN"]["value"] == "false"
    assert env["ROLLGUARD_LOG_FORMAT"]["value"] == "json"
    assert env["ROLLGUARD_LOG_LEVEL"]["value"] == "debug"
    assert render().env["ROLLGUARD_NAMESPACES"]["value"] == NAMESPACE, "by default only the release namespace"
    assert render(SCENARIOS["cluster-wide"]).env["ROLLGUARD_NAMESPACES"]["value"] == "", "empty means every one"
    assert render({"dryRun": True}).env["ROLLGUARD_DRY_RUN"]["value"] == "true"
    assert "ROLLGUARD_PROMETHEUS_URL" not in render().env


def test_image_defaults_to_app_version_and_a_digest_pins_it() -> None:
    assert render().container["image"] == "rollguard:0.1.0"
    digest = "sha256:" + "ab" * 32
    pinned = render({"image": {"repository": "registry.example.com/rollguard", "tag": "0.2.0", "digest": digest}})
    assert pinned.container["image"] == f"registry.example.com/rollguard@{digest}"


def test_pod_labels_cannot_replace_the_selector_labels() -> None:
    rendered = render({"podLabels": {"team": "sre", "app.kubernetes.io/name": "hijack"}})
    deployment = rendered.one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "sre"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- rules ---------------------------------------------------------------------------------------------
def test_set_file_puts_a_rule_file_into_the_mounted_configmap_verbatim() -> None:
    rule_file = ROOT / "rules" / "backend-staging.yaml"
    # Exactly what `helm install --set-file 'rules.backend\.yaml=rules/backend-staging.yaml'` parses.
    values = helm.parse_set_file(f"rules.backend\\.yaml={rule_file}")
    # The example policy queries Prometheus and pages through its own Secret: both must be given.
    rendered = render({**values, "prometheus": {"url": "http://prometheus:9090"},
                       "notify": {"policySecrets": ["rollguard"]}})
    configmap = rendered.one("ConfigMap")
    assert configmap["data"] == {"backend.yaml": rule_file.read_text()}
    mount = {m["name"]: m for m in rendered.container["volumeMounts"]}["rules"]
    assert mount["mountPath"] == rendered.env["ROLLGUARD_RULES"]["value"] == "/etc/rollguard/rules"
    assert "subPath" not in mount, "subPath mounts are never refreshed: hot reload would break"
    volume = {v["name"]: v for v in rendered.pod_spec["volumes"]}["rules"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]


def test_a_rule_change_does_not_roll_the_pods() -> None:
    """Rules are hot-reloaded from the mounted ConfigMap: the pod template must not depend on them."""
    before = render({"rules": {"a.yaml": "kind: RollbackPolicy\n"}})
    after = render({"rules": {"a.yaml": "kind: RollbackPolicy # changed\n", "b.yaml": "x: 1\n"}})
    assert before.one("ConfigMap")["data"] != after.one("ConfigMap")["data"]
    assert before.one("Deployment")["spec"]["template"] == after.one("Deployment")["spec"]["template"]


def test_an_existing_rules_configmap_is_mounted_instead() -> None:
    rendered = render(SCENARIOS["existing-rules"])
    assert rendered.of_kind("ConfigMap") == []
    volume = {v["name"]: v for v in rendered.pod_spec["volumes"]}["rules"]
    assert volume["configMap"]["name"] == "team-rules"
    assert "WARNING: no rule files" not in rendered.notes


# --- secrets ---------------------------------------------------------------------------------------------
def test_existing_secret_reaches_the_daemon_only_as_optional_secret_refs() -> None:
    rendered = render(SCENARIOS["existing-secret"])
    assert rendered.of_kind("Secret") == [], "the chart must not create a Secret when one is referenced"
    expected = {
        "ROLLGUARD_SLACK_TOKEN": "slack-token",
        "ROLLGUARD_SLACK_WEBHOOK_URL": "slack-webhook-url",
        "ROLLGUARD_PAGERDUTY_ROUTING_KEY": "pagerduty-routing-key",
    }
    for name, key in expected.items():
        assert rendered.env[name] == {"name": name, "valueFrom": {"secretKeyRef": {
            "name": "rollguard-notifiers", "key": key, "optional": True}}}


def test_without_a_secret_no_credential_variables_are_set() -> None:
    env = render().env
    assert not {n for n in env if n.startswith(("ROLLGUARD_SLACK", "ROLLGUARD_PAGERDUTY"))}


def test_secret_values_appear_only_in_the_secret() -> None:
    rendered = render(SCENARIOS["created-secret"])
    secret = rendered.one("Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"slack-token": SLACK_TOKEN, "slack-webhook-url": WEBHOOK_URL,
                       "pagerduty-routing-key": ROUTING_KEY}
    assert rendered.env["ROLLGUARD_SLACK_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    needles = {SLACK_TOKEN, WEBHOOK_URL, ROUTING_KEY}
    needles |= {base64.b64encode(n.encode()).decode() for n in needles}
    for obj in rendered.objects:
        if obj is secret:
            continue
        leaked = {n for n in needles for s in strings_in(obj) if n in s}
        assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} contains a credential"
    literal_env = [e["value"] for e in rendered.container["env"] if "value" in e]
    assert not [v for v in literal_env for n in needles if n in v]
    assert not any(n in rendered.notes for n in needles)


@pytest.mark.parametrize(("values", "message"), [
    ({"secrets": {"existingSecret": "s", "create": True, "values": {"slackToken": "x"}}},
     "set either secrets.existingSecret (recommended) or secrets.create, not both"),
    ({"secrets": {"create": True}}, "secrets.create is true but secrets.values holds no credential"),
    ({"rules": {"a.yaml": "x: 1"}, "existingRulesConfigMap": "team-rules"},
     "set either rules (files in values) or existingRulesConfigMap, not both"),
    ({"replicaCount": 3, "leaderElection": {"enabled": False}},
     "replicaCount is 3 but leaderElection.enabled is false"),
    ({"watch": {"clusterWide": True, "namespaces": ["staging"]}},
     "watch: set either watch.clusterWide (every namespace) or watch.namespaces (staging), not both"),
    ({"leaderElection": {"leaseDurationSeconds": 10, "writeMargin": 6}},
     "leaderElection.writeMargin is 6 but may be at most half of leaderElection.leaseDurationSeconds (10): "
     "lower it or lengthen the lease"),
])
def test_contradictory_values_fail_with_what_to_change(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# --- what the daemon needs: Prometheus, the API token, the limits ---------------------------------------
EXAMPLE_POLICY = ROOT / "rules" / "backend-staging.yaml"


def daemon_settings(rendered: Rendered) -> RunSettings:
    """What `rollguard run` makes of the rendered Deployment's literal environment (downward API left out)."""
    env = {name: e["value"] for name, e in rendered.env.items() if "value" in e}
    return run_settings(rules=None, kubeconfig=None, namespaces=(), dry_run=False, http_listen=None,
                        log=LogSettings(), env=env)


def test_prometheus_url_a_policy_and_a_pagerduty_secret_are_a_working_install(tmp_path: Path) -> None:
    values = {"prometheus": {"url": "http://prometheus-operated.monitoring:9090"},
              "rules": {"backend.yaml": EXAMPLE_POLICY.read_text()},
              "notify": {"policySecrets": ["rollguard"]}}
    rendered = render(values)
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    settings = daemon_settings(rendered)
    assert settings.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert settings.namespaces == (NAMESPACE,)
    # The rules the daemon reads are the ConfigMap's, and with this Prometheus it runs every policy in them.
    (tmp_path / "backend.yaml").write_text(rendered.one("ConfigMap")["data"]["backend.yaml"])
    policies = load_file(tmp_path / "backend.yaml").policies
    assert [can_run(p, prometheus_url=settings.prometheus_url) for p in policies] == [None]
    # The policy pages through Secret rollguard: the daemon reads it in its own namespace, by name only.
    assert rendered.env["ROLLGUARD_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    secret_role = next(r for r in rendered.of_kind("Role") if r["metadata"]["name"] == f"{RELEASE}-policy-secrets")
    assert secret_role["metadata"]["namespace"] == NAMESPACE
    assert secret_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["rollguard"],
                                     "verbs": ["get"]}]
    assert bound_to_service_account(rendered, secret_role)


def test_a_prometheus_signal_without_prometheus_url_fails_naming_the_value() -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(
            "rules backend.yaml has a prometheus signal but prometheus.url is not set: set prometheus.url to your "
            "Prometheus HTTP API")):
        render({"rules": {"backend.yaml": EXAMPLE_POLICY.read_text()}, "notify": {"policySecrets": ["rollguard"]}})
    # A commented-out signal is no signal; nor is a Prometheus named in a comment.
    render({"rules": {"web.yaml": "# prometheus: later\nspec:\n  signals:\n    # x: {prometheus: {query: up}}\n"}})


def test_a_policy_secret_that_is_not_granted_fails_with_what_to_add() -> None:
    rule = EXAMPLE_POLICY.read_text()
    with pytest.raises(helm.HelmRenderError, match=re.escape(
            "rules backend.yaml: a policy reads Secret rollguard ({secret: rollguard, ...}) but notify.policySecrets "
            "does not list it: add it")):
        render({"prometheus": {"url": "http://prometheus:9090"}, "rules": {"backend.yaml": rule},
                "notify": {"policySecrets": ["other"]}})
    block_style = ("spec:\n  notify:\n    slack:\n      webhookFrom:\n"
                   "        secret: \"lobby-slack\"\n        key: url\n")
    with pytest.raises(helm.HelmRenderError, match=re.escape("a policy reads Secret lobby-slack")):
        render({"rules": {"lobby.yaml": block_style}})
    render({"rules": {"lobby.yaml": block_style}, "notify": {"policySecrets": ["lobby-slack"]}})


def test_prometheus_token_and_ca_reach_the_daemon_as_read_only_files() -> None:
    rendered = render(SCENARIOS["prometheus-secured"])
    settings = daemon_settings(rendered)
    assert settings.prometheus_url == "https://prometheus.monitoring:9091"
    assert settings.prometheus_token_file == Path("/var/run/secrets/rollguard/prometheus-client/token")
    assert settings.prometheus_ca_file == Path("/var/run/secrets/rollguard/prometheus-client/ca.crt")
    mounts = [m for m in rendered.container["volumeMounts"] if m["mountPath"].startswith("/var/run/secrets/rollguard")]
    assert [(m["mountPath"], m["readOnly"]) for m in mounts] == [("/var/run/secrets/rollguard/prometheus-client", True)]
    volume = {v["name"]: v for v in rendered.pod_spec["volumes"]}[mounts[0]["name"]]
    assert volume["secret"] == {"secretName": "prometheus-client", "defaultMode": 0o440, "items": [
        {"key": "token", "path": "token"}, {"key": "ca.crt", "path": "ca.crt"}]}, "one volume, only the keys named"
    assert not rendered.of_kind("Secret"), "the chart only references the Secret"


def test_the_api_token_reaches_the_daemon_as_a_file() -> None:
    rendered = render(SCENARIOS["api-token"])
    assert rendered.env["ROLLGUARD_API_TOKEN_FILE"] == {
        "name": "ROLLGUARD_API_TOKEN_FILE", "value": "/var/run/secrets/rollguard/rollguard-api/api-token"}
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    mount = next(m for m in rendered.container["volumeMounts"] if m["mountPath"].startswith("/var/run/secrets/"))
    assert volumes[mount["name"]]["secret"]["items"] == [{"key": "api-token", "path": "api-token"}]
    assert not {"ROLLGUARD_API_TOKEN_FILE", "ROLLGUARD_PROMETHEUS_TOKEN_FILE"} & set(render().env)
    assert not [m for m in render().container["volumeMounts"] if m["mountPath"].startswith("/var/run/secrets/")]


def test_lease_and_rollback_limits_reach_the_daemon() -> None:
    assert daemon_settings(render()).actions == ActionLimits(max_rollbacks=3, rollback_window=3600, write_margin=2)
    settings = daemon_settings(render(SCENARIOS["limits"]))
    assert settings.actions == ActionLimits(max_rollbacks=1, rollback_window=7200, write_margin=5)
    assert settings.lease_duration == 30


# --- RBAC ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["default", "cluster-wide", "cluster-wide-dry-run", "dry-run", "namespaced",
                                      "dry-run-namespaced", "rollback-jobs", "rollback-jobs-dry-run", "policy-secrets"])
def test_rbac_is_exactly_the_table(scenario: str) -> None:
    values = SCENARIOS[scenario]
    dry_run = bool(values.get("dryRun"))
    jobs = bool(values.get("rollbackJobs", {}).get("enabled"))
    cluster_wide = bool(values.get("watch", {}).get("clusterWide"))
    namespaces = [] if cluster_wide else values.get("watch", {}).get("namespaces") or [NAMESPACE]
    rendered = render(values)
    roles = rendered.of_kind("ClusterRole") + rendered.of_kind("Role")
    for role in roles:
        assert bound_to_service_account(rendered, role), f"{role['kind']}/{role['metadata']['name']} is unbound"

    lease_roles = [r for r in rendered.of_kind("Role") if r["metadata"]["name"].endswith("-leader-election")]
    secret_roles = [r for r in rendered.of_kind("Role") if r["metadata"]["name"].endswith("-policy-secrets")]
    watch_roles = [r for r in roles if r not in lease_roles and r not in secret_roles]
    assert [r["metadata"]["namespace"] for r in lease_roles] == [NAMESPACE]
    assert grants(lease_roles[0]) == expected_rbac(RELEASE_NS, dry_run=dry_run)
    policy_secrets = values.get("notify", {}).get("policySecrets", [])
    assert [(r["metadata"]["namespace"], r["rules"]) for r in secret_roles] == ([(NAMESPACE, [{
        "apiGroups": [""], "resources": ["secrets"], "resourceNames": policy_secrets, "verbs": ["get"]}])]
        if policy_secrets else []), "get on exactly the Secrets listed, and no Role at all without any"
    if namespaces:
        assert rendered.of_kind("ClusterRole") == [], "namespaced mode creates nothing cluster-scoped"
        assert rendered.of_kind("ClusterRoleBinding") == []
        assert sorted(r["metadata"]["namespace"] for r in watch_roles) == sorted(namespaces)
    else:
        assert [r["kind"] for r in watch_roles] == ["ClusterRole"]
    for role in watch_roles:
        assert grants(role) == expected_rbac(WATCHED, dry_run=dry_run, jobs=jobs), role["metadata"]
        assert not any("resourceNames" in rule for rule in role["rules"])

    # The Lease grants other than create are narrowed to the one Lease the daemon uses.
    lease_name = rendered.env["ROLLGUARD_LEASE_NAME"]["value"]
    for rule in lease_roles[0]["rules"]:
        assert rule.get("resourceNames") == (None if rule["verbs"] == ["create"] else [lease_name]), rule


def test_no_job_can_be_created_unless_rollback_jobs_are_enabled() -> None:
    for scenario in ("default", "namespaced", "cluster-wide"):
        for role in render(SCENARIOS[scenario]).of_kind("ClusterRole") + render(SCENARIOS[scenario]).of_kind("Role"):
            assert not grants(role) & JOB_GRANTS, (scenario, role["metadata"])
    assert any(("batch", "jobs", "create") in grants(role) for role in render(SCENARIOS["rollback-jobs"]).objects
               if role["kind"] == "ClusterRole")


# --- NetworkPolicy ---------------------------------------------------------------------------------------
def test_the_network_policy_lets_in_only_the_http_port_from_anywhere_by_default() -> None:
    rendered = render()
    policy = rendered.one("NetworkPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"] == {
        "podSelector": {"matchLabels": rendered.one("Deployment")["spec"]["selector"]["matchLabels"]},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "http-metrics", "protocol": "TCP"}]}],
    }
    assert [p["name"] for p in rendered.container["ports"]] == ["http-metrics"]


def test_the_network_policy_admits_only_the_peers_given() -> None:
    policy = render(SCENARIOS["network-policy-peers"]).one("NetworkPolicy")
    assert policy["spec"]["ingress"] == [{
        "ports": [{"port": "http-metrics", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }]
    assert render(SCENARIOS["no-network-policy"]).of_kind("NetworkPolicy") == []


def test_no_rbac_objects_when_rbac_is_managed_elsewhere() -> None:
    rendered = render({"rbac": {"create": False}})
    kinds = {o["kind"] for o in rendered.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def read_readme_rbac_table() -> dict[tuple[str, str, str], tuple[str, bool]]:
    text = (CHART / "README.md").read_text()
    section = text.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str, str], tuple[str, bool]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in {"verb", ""} or set(cells[0]) <= {"-"}:
            continue
        verb, resource, scope, dry_run, _why = cells
        name, _, group = resource.partition(".")
        assert dry_run in {"kept", "dropped"}, line
        rows[(group, name, verb)] = (scope, dry_run == "kept")
    return rows


def test_chart_readme_documents_exactly_the_rbac_the_tests_enforce() -> None:
    assert read_readme_rbac_table() == RBAC


# --- ServiceMonitor --------------------------------------------------------------------------------------
def test_service_monitor_is_off_by_default() -> None:
    assert render().of_kind("ServiceMonitor") == []


def test_service_monitor_scrapes_the_metrics_port() -> None:
    rendered = render(SCENARIOS["service-monitor"])
    monitor = rendered.one("ServiceMonitor")
    # Not in kubernetes-validate's built-in schemas (a CRD): checked field by field instead.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http-metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    service = rendered.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert set(monitor["spec"]) == {"selector", "endpoints"}


# --- values, schema and documentation --------------------------------------------------------------------
@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"replicaCount": "2"}, "at '/replicaCount': got string, want integer"),
    ({"dryRun": "yes"}, "at '/dryRun': got string, want boolean"),
    ({"watch": {"namespaces": "staging"}}, "at '/watch/namespaces': got string, want array"),
    ({"watch": {"namespaces": ["Staging_1"]}}, "at '/watch/namespaces/0'"),
    ({"image": {"tagg": "1.0"}}, "additional properties 'tagg' not allowed"),
    ({"rules": {"backend.txt": "x: 1"}}, "invalid propertyName 'backend.txt'"),
    ({"secrets": {"keys": {"slackToken": ""}}}, "at '/secrets/keys/slackToken'"),
    ({"watch": {"clusterWide": "yes"}}, "at '/watch/clusterWide': got string, want boolean"),
    ({"prometheus": {"url": "prometheus:9090"}}, "at '/prometheus/url'"),
    ({"prometheus": {"bearerTokenSecret": {"name": "Bad_Name"}}}, "at '/prometheus/bearerTokenSecret/name'"),
    ({"prometheus": {"caSecret": {"secret": "x"}}}, "additional properties 'secret' not allowed"),
    ({"api": {"tokenSecret": {"key": ""}}}, "at '/api/tokenSecret/key'"),
    ({"notify": {"policySecrets": "lobby-pagerduty"}}, "at '/notify/policySecrets': got string, want array"),
    ({"rollback": {"window": 10}}, "at '/rollback/window'"),
    ({"rollback": {"maxPerWindow": -1}}, "at '/rollback/maxPerWindow'"),
    ({"leaderElection": {"leaseDurationSeconds": 601}}, "at '/leaderElection/leaseDurationSeconds'"),
])
def test_schema_rejects_bad_values_at_install_time(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)


def documented_paths(schema: Obj, prefix: str = "") -> dict[str, Obj]:
    """Value paths a user sets: closed objects are walked into, everything else is one value."""
    paths: dict[str, Obj] = {}
    for key, sub in schema["properties"].items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and sub.get("additionalProperties") is False:
            paths.update(documented_paths(sub, f"{path}."))
        else:
            paths[path] = sub
    return paths


def test_every_value_is_in_the_schema_and_documented() -> None:
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
        defaults = chart.values
    assert schema is not None
    paths = documented_paths(schema)
    assert all(sub.get("description") for sub in paths.values())

    def flatten(values: Mapping[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for key, value in values.items():
            path = f"{prefix}{key}"
            out |= flatten(value, f"{path}.") if path not in paths and isinstance(value, Mapping) else {path}
        return out

    assert flatten(defaults) == set(paths), "values.yaml and values.schema.json disagree"
    readme = (CHART / "README.md").read_text().split("## Values", 1)[1]
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    assert documented == set(paths), "the README values table is out of date"
    assert commented_values(CHART / "values.yaml") >= set(paths), "a value in values.yaml has no `# --` comment"


def commented_values(values_file: Path) -> set[str]:
    """Paths of the keys in values.yaml whose comment block right above starts with `# --`."""
    commented: set[str] = set()
    stack: list[tuple[int, str]] = []
    comments: list[str] = []
    for line in values_file.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        match = re.match(r"^( *)([A-Za-z][\w]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            if comments and comments[0].startswith("# --"):
                commented.add(".".join(key for _, key in stack))
        comments = []
    return commented


# --- what the user reads after install -------------------------------------------------------------------
def test_notes_say_how_to_check_it_and_how_to_approve_a_review() -> None:
    notes = render().notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE}" in notes
    assert "kubectl annotate deployment/NAME -n NAMESPACE rollguard.io/approve=rollback" in notes
    assert "WARNING: no rule files were given" in notes
    assert "DRY RUN" not in notes
    assert "DRY RUN" in render({"dryRun": True}).notes
    namespaced = render(SCENARIOS["namespaced"]).notes
    assert "Watching: namespaces staging, production (a Role in each)." in namespaced
    assert f"Watching: namespaces {NAMESPACE} (a Role in each)." in notes
    assert f"Watching: every namespace (ClusterRole {NAMESPACE}-{RELEASE})." in render(SCENARIOS["cluster-wide"]).notes
