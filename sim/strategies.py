"""Per-kind registry behaviour of the simulated API server: defaults, create/update preparation, validation.

What the real API server does between decoding a request and writing to etcd (spec 1.1):

* `apply_defaults(rt, obj)` — the `SetDefaults_*` functions: Deployment replicas/strategy/history/
  deadline, Job completions/parallelism/backoffLimit, Service type and ports, and the pod template
  defaults (restartPolicy, dnsPolicy, terminationGracePeriodSeconds, schedulerName, securityContext,
  container terminationMessagePath/Policy, imagePullPolicy, resources, probe and port defaults).
  The controllers call it for the ReplicaSets and Pods they write through the Store, so a template
  copied back by `kubectl rollout undo` compares equal to the stored one. Idempotent.
* `prepare_create(rt, obj, store)` — status wiped (pods start Pending), namespaces Active, Services
  get a cluster IP, Jobs a generated selector; uid is chosen here when the object needs it first.
* `prepare_update(rt, old, new, subresource=...)` — the spec/status split: a main-resource write
  keeps the stored status and bumps `metadata.generation` iff the spec changed (Deployments: or the
  annotations); a `/status` write keeps spec and labels, may change annotations, never bumps generation.
* `validate(rt, obj, old=None)` — 422 Invalid with causes for what matters to rollouts: names, label
  syntax, Deployment/ReplicaSet/Job selectors (must match the template labels, immutable on update),
  containers, strategy, restart policy, Service ports, events.k8s.io required fields.

`drop_nulls(obj)` removes JSON nulls from maps, as decoding into Go structs does (`creationTimestamp:
null` in a template sent by `kubectl rollout undo` means "unset").
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim.resources import (
    DEPLOYMENTS,
    EVENTS,
    EVENTS_V1,
    JOBS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SERVICES,
    ResourceType,
)
from sim.selectors import (
    label_key_error,
    label_selector_errors,
    label_value_error,
    selector_matches,
)
from sim.store import ApiError, Obj, Store

DEFAULT_SCHEDULER = "default-scheduler"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
FIRST_SERVICE_IP = 10  # 10.96.0.1 is the `kubernetes` Service in a real cluster; leave room like kubeadm does.

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_PERCENT = re.compile(r"(\d+)%")

SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")

# Kinds whose status is a subresource: the main resource's writes never change it.
_HAS_STATUS = frozenset({DEPLOYMENTS.bucket, REPLICASETS.bucket, JOBS.bucket, PODS.bucket, SERVICES.bucket,
                         NAMESPACES.bucket})


# ----- errors -----


@dataclass(frozen=True)
class FieldError:
    """One validation failure: `field` path, `reason` (FieldValueInvalid, ...) and the message detail."""

    field: str
    reason: str
    detail: str


def go_value(value: Any) -> str:
    """A value as Go's `%#v` prints the common cases in validation messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        if all(isinstance(v, str) for v in value.values()):
            inner = ", ".join(f"{go_value(k)}:{go_value(v)}" for k, v in sorted(value.items()))
            return "map[string]string{" + inner + "}"
        return "map[string]interface {}{" + ", ".join(f"{go_value(k)}:{go_value(v)}"
                                                      for k, v in sorted(value.items())) + "}"
    if value is None:
        return "nil"
    return str(value)


def _selector_go(selector: Mapping[str, Any]) -> str:
    labels = selector.get("matchLabels")
    labels_text = go_value(labels) if labels else "map[string]string(nil)"
    expressions = selector.get("matchExpressions")
    if expressions:
        exprs = ", ".join(
            "v1.LabelSelectorRequirement{Key:" + go_value(e.get("key", "")) + ", Operator:"
            + go_value(e.get("operator", "")) + ", Values:[]string{"
            + ", ".join(go_value(v) for v in e.get("values") or []) + "}}" for e in expressions)
        expressions_text = "[]v1.LabelSelectorRequirement{" + exprs + "}"
    else:
        expressions_text = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{labels_text}, MatchExpressions:{expressions_text}}}"


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid in the API server's shape: `Deployment.apps "web" is invalid: <field>: <detail>, ...`."""
    parts = [f"{e.field}: {e.detail}" for e in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    group_kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
    return ApiError(422, "Invalid", f'{group_kind} "{name}" is invalid: {joined}',
                    details={"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})


def _invalid_value(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}")


def _required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def _unsupported(field: str, value: Any, supported: list[str]) -> FieldError:
    return FieldError(field, "FieldValueNotSupported",
                      f"Unsupported value: {go_value(value)}: supported values: "
                      + ", ".join(go_value(s) for s in supported))


# ----- null handling -----


def drop_nulls(value: Any) -> Any:
    """Remove null map values recursively (in place) and return `value`."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for item in value.values():
            drop_nulls(item)
    elif isinstance(value, list):
        for item in value:
            drop_nulls(item)
    return value


# ----- defaults -----


def _image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, else IfNotPresent (digests count as pinned)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    http_get = probe.get("httpGet")
    if isinstance(http_get, dict):
        http_get.setdefault("path", "/")
        http_get.setdefault("scheme", "HTTP")


def _default_container(container: Any) -> None:
    if not isinstance(container, dict):
        return
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in container:
        container["imagePullPolicy"] = _image_pull_policy(str(container.get("image", "")))
    # Go marshals ResourceRequirements without omitempty: every container shows `resources: {}`.
    container.setdefault("resources", {})
    for port in container.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in container.get("env") or ():
        field_ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(probe))


def default_pod_spec(spec: dict[str, Any]) -> None:
    """`SetDefaults_PodSpec` plus the container defaults, in place."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", DEFAULT_SCHEDULER)
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or ():
            _default_container(container)


def _default_template(owner_spec: dict[str, Any]) -> None:
    template = owner_spec.get("template")
    if isinstance(template, dict):
        spec = template.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(spec)


def _default_replicaset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _default_template(spec)


def _default_job(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 2147483647 if "backoffLimitPerIndex" in spec else 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    spec.setdefault("podReplacementPolicy", "Failed" if "podFailurePolicy" in spec else "TerminatingOrFailed")
    _default_template(spec)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    meta = obj.setdefault("metadata", {})
    if template_labels and not meta.get("labels"):
        meta["labels"] = dict(template_labels)


def _default_pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("enableServiceLinks", True)


def _default_service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "targetPort" not in port and "port" in port:
                port["targetPort"] = port["port"]


def _default_namespace(obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    if meta.get("name"):
        labels = meta.setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _default_secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")


_DEFAULTERS = {
    DEPLOYMENTS.bucket: _default_deployment,
    REPLICASETS.bucket: _default_replicaset,
    JOBS.bucket: _default_job,
    PODS.bucket: _default_pod,
    SERVICES.bucket: _default_service,
    NAMESPACES.bucket: _default_namespace,
    "secrets": _default_secret,
}


def apply_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Fill in the API defaults of `rt` in place (idempotent); kinds without defaults are left alone."""
    defaulter = _DEFAULTERS.get(rt.bucket)
    if defaulter is not None:
        defaulter(obj)


# ----- create / update preparation -----


def allocate_cluster_ip(store: Store) -> str:
    """The lowest free address of the simulated Service CIDR."""
    used = {str((svc.get("spec") or {}).get("clusterIP", "")) for svc in store.iter_objects(SERVICES)}
    for offset in range(FIRST_SERVICE_IP, SERVICE_CIDR.num_addresses - 1):
        candidate = str(SERVICE_CIDR.network_address + offset)
        if candidate not in used:
            return candidate
    raise ApiError(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full")


def prepare_create(rt: ResourceType, obj: Obj, store: Store) -> None:
    """Make a decoded, defaulted object ready to store: status reset, kind-specific generated fields."""
    meta = obj.setdefault("metadata", {})
    for system in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                   "deletionGracePeriodSeconds"):
        meta.pop(system, None)
    if rt.bucket in _HAS_STATUS:
        obj.pop("status", None)
    if rt.bucket == PODS.bucket:
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif rt.bucket == NAMESPACES.bucket:
        obj["status"] = {"phase": "Active"}
    elif rt.bucket == SERVICES.bucket:
        spec = obj.setdefault("spec", {})
        if spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = allocate_cluster_ip(store)
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        obj["status"] = {"loadBalancer": {}}
    elif rt.bucket == JOBS.bucket:
        _generate_job_selector(obj)
    elif rt.bucket in (DEPLOYMENTS.bucket, REPLICASETS.bucket):
        obj["status"] = {}


def _generate_job_selector(obj: Obj) -> None:
    """`batch/v1` Jobs get a selector on their own uid unless `manualSelector` is set."""
    spec = obj.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    meta = obj["metadata"]
    uid = meta.setdefault("uid", str(uuid.uuid4()))
    name = meta.get("name") or meta.get("generateName", "")
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = template_meta.setdefault("labels", {})
    labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                   "controller-uid": uid, "job-name": name})
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    if not meta.get("labels"):
        meta["labels"] = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                          "controller-uid": uid, "job-name": name}


def prepare_update(rt: ResourceType, old: Obj, new: Obj, *, subresource: str | None = None) -> None:
    """Apply the spec/status split and the generation rule to `new` (a defaulted request object)."""
    meta = new.setdefault("metadata", {})
    old_meta = old.get("metadata") or {}
    if "generation" in old_meta:
        meta["generation"] = old_meta["generation"]
    else:
        meta.pop("generation", None)
    if subresource == "status":
        for field in ("spec",):
            if field in old:
                new[field] = old[field]
            else:
                new.pop(field, None)
        if "labels" in old_meta:
            meta["labels"] = old_meta["labels"]
        else:
            meta.pop("labels", None)
        return
    if rt.bucket in _HAS_STATUS:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if rt.has_generation:
        changed = new.get("spec") != old.get("spec")
        if rt.bucket == DEPLOYMENTS.bucket:
            # Annotations count for Deployments: the controller copies them onto ReplicaSets.
            changed = changed or (meta.get("annotations") or {}) != (old_meta.get("annotations") or {})
        if changed:
            meta["generation"] = int(old_meta.get("generation") or 0) + 1


# ----- validation -----


def _name_errors(rt: ResourceType, meta: Mapping[str, Any]) -> list[FieldError]:
    name = meta.get("name")
    field = "metadata.name"
    if not name:
        prefix = meta.get("generateName")
        if not prefix:
            return [_required(field, "name or generateName is required")]
        # A generated name is the prefix plus random characters: check the prefix as a name would be.
        name, field = str(prefix) + "x", "metadata.generateName"
    name = str(name)
    if rt.bucket == NAMESPACES.bucket:
        pattern, message, limit = _DNS1123_LABEL, LABEL_MESSAGE, 63
    elif rt.bucket == SERVICES.bucket:
        pattern, message, limit = _DNS1035_LABEL, DNS1035_MESSAGE, 63
    else:
        pattern, message, limit = _DNS1123_SUBDOMAIN, SUBDOMAIN_MESSAGE, 253
    errors = []
    if len(name) > limit:
        errors.append(_invalid_value(field, name, f"must be no more than {limit} characters"))
    if not pattern.fullmatch(name):
        errors.append(_invalid_value(field, name, message))
    return errors


def _metadata_errors(meta: Mapping[str, Any], path: str = "metadata") -> list[FieldError]:
    errors: list[FieldError] = []
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping):
        return [_invalid_value(f"{path}.labels", labels, "must be a map")]
    for key, value in labels.items():
        key_error = label_key_error(str(key))
        if key_error:
            errors.append(_invalid_value(f"{path}.labels", key, key_error))
        value_error = label_value_error(str(value))
        if value_error:
            errors.append(_invalid_value(f"{path}.labels", value, value_error))
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        key_error = label_key_error(str(key).lower())
        if key_error:
            errors.append(_invalid_value(f"{path}.annotations", key, key_error))
        total += len(str(key)) + len(str(value))
    if total > 256 * 1024:
        errors.append(FieldError(f"{path}.annotations", "FieldValueTooLong",
                                 "Too long: may not be more than 262144 bytes"))
    return errors


def _container_errors(spec: Mapping[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(_required(f"{path}.containers"))
    names: set[str] = set()
    for field in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field) or []):
            where = f"{path}.{field}[{index}]"
            name = container.get("name", "") if isinstance(container, Mapping) else ""
            if not name:
                errors.append(_required(f"{where}.name"))
            elif not _DNS1123_LABEL.fullmatch(name) or len(name) > 63:
                errors.append(_invalid_value(f"{where}.name", name, LABEL_MESSAGE))
            elif name in names:
                errors.append(FieldError(f"{where}.name", "FieldValueDuplicate", f"Duplicate value: {go_value(name)}"))
            names.add(name)
            if isinstance(container, Mapping) and not container.get("image"):
                errors.append(_required(f"{where}.image"))
            for port_index, port in enumerate((container.get("ports") or []) if isinstance(container, Mapping)
                                              else []):
                number = port.get("containerPort") if isinstance(port, Mapping) else None
                if not isinstance(number, int) or not 1 <= number <= 65535:
                    errors.append(_invalid_value(f"{where}.ports[{port_index}].containerPort", number,
                                                 "must be between 1 and 65535, inclusive"))
    return errors


def _template_errors(spec: Mapping[str, Any], *, restart_policies: list[str]) -> list[FieldError]:
    template = spec.get("template")
    if not isinstance(template, Mapping):
        return [_required("spec.template")]
    errors = _metadata_errors(template.get("metadata") or {}, "spec.template.metadata")
    pod_spec = template.get("spec") or {}
    errors += _container_errors(pod_spec, "spec.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy not in restart_policies:
        if len(restart_policies) == 1:
            errors.append(_unsupported("spec.template.spec.restartPolicy", policy, restart_policies))
        else:
            errors.append(_required("spec.template.spec.restartPolicy",
                                    "valid values: " + ", ".join(go_value(p) for p in restart_policies)))
    return errors


def _non_negative(spec: Mapping[str, Any], field: str) -> list[FieldError]:
    value = spec.get(field)
    if isinstance(value, int) and value < 0:
        return [_invalid_value(f"spec.{field}", value, "must be greater than or equal to 0")]
    return []


def _selector_errors(rt: ResourceType, spec: Mapping[str, Any], old: Obj | None, *,
                     allow_empty: bool = False) -> list[FieldError]:
    errors: list[FieldError] = []
    selector = spec.get("selector")
    if selector is None:
        return [_required("spec.selector")]
    if not isinstance(selector, Mapping):
        return [_invalid_value("spec.selector", selector, "must be a label selector")]
    if not allow_empty and not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errors.append(_invalid_value("spec.selector", selector,
                                     f"empty selector is invalid for {rt.kind.lower()}"))
    errors += [FieldError(f, r, d) for f, r, d in label_selector_errors(selector, "spec.selector")]
    if errors:
        return errors
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector_matches(selector, labels):
        errors.append(_invalid_value("spec.template.metadata.labels", labels,
                                     "`selector` does not match template `labels`"))
    if old is not None:
        old_selector = (old.get("spec") or {}).get("selector")
        if old_selector is not None and old_selector != selector:
            errors.append(FieldError("spec.selector", "FieldValueInvalid",
                                     f"Invalid value: {_selector_go(selector)}: field is immutable"))
    return errors


def _int_or_percent(value: Any) -> tuple[int, bool] | None:
    """(number, is_percent) of an IntOrString, None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, False
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value)
        if match:
            return int(match.group(1)), True
    return None


def _strategy_errors(spec: Mapping[str, Any]) -> list[FieldError]:
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind not in ("Recreate", "RollingUpdate"):
        return [_unsupported("spec.strategy.type", kind, ["Recreate", "RollingUpdate"])]
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            return [FieldError("spec.strategy.rollingUpdate", "FieldValueForbidden",
                               "Forbidden: may not be specified when strategy `type` is 'Recreate'")]
        return []
    errors: list[FieldError] = []
    parsed: dict[str, tuple[int, bool]] = {}
    for field in ("maxUnavailable", "maxSurge"):
        value = (rolling or {}).get(field)
        path = f"spec.strategy.rollingUpdate.{field}"
        number = _int_or_percent(value)
        if number is None:
            errors.append(_invalid_value(path, value, "a valid percent string must be a numeric string followed "
                                         "by an ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                                         "'[0-9]+%')"))
            continue
        if number[0] < 0:
            errors.append(_invalid_value(path, value, "must be greater than or equal to 0"))
        if number[1] and number[0] > 100 and field == "maxUnavailable":
            errors.append(_invalid_value(path, value, "must not be greater than 100%"))
        parsed[field] = number
    if not errors and parsed["maxUnavailable"][0] == 0 and parsed["maxSurge"][0] == 0:
        errors.append(_invalid_value("spec.strategy.rollingUpdate.maxUnavailable", (rolling or {})["maxUnavailable"],
                                     "may not be 0 when `maxSurge` is 0"))
    return errors


def _deployment_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = _non_negative(spec, "replicas") + _non_negative(spec, "minReadySeconds")
    errors += _non_negative(spec, "revisionHistoryLimit")
    errors += _selector_errors(DEPLOYMENTS, spec, old)
    errors += _template_errors(spec, restart_policies=["Always"])
    errors += _strategy_errors(spec)
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= int(spec.get("minReadySeconds") or 0):
        errors.append(_invalid_value("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"))
    return errors


def _replicaset_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = _non_negative(spec, "replicas") + _non_negative(spec, "minReadySeconds")
    errors += _selector_errors(REPLICASETS, spec, old)
    errors += _template_errors(spec, restart_policies=["Always"])
    return errors


def _job_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = _non_negative(spec, "parallelism") + _non_negative(spec, "completions")
    errors += _non_negative(spec, "backoffLimit")
    errors += _selector_errors(JOBS, spec, old)
    errors += _template_errors(spec, restart_policies=["OnFailure", "Never"])
    return errors


def _pod_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = _container_errors(spec, "spec")
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        errors.append(_unsupported("spec.restartPolicy", policy, ["Always", "OnFailure", "Never"]))
    return errors


def _service_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors: list[FieldError] = []
    kind = spec.get("type")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(_unsupported("spec.type", kind, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        errors.append(_required("spec.ports"))
    for index, port in enumerate(ports):
        number = port.get("port") if isinstance(port, Mapping) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            errors.append(_invalid_value(f"spec.ports[{index}].port", number, "must be between 1 and 65535, inclusive"))
    if len(ports) > 1:
        for index, port in enumerate(ports):
            if isinstance(port, Mapping) and not port.get("name"):
                errors.append(_required(f"spec.ports[{index}].name"))
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") not in (None, old_ip):
            errors.append(_invalid_value("spec.clusterIPs[0]", spec.get("clusterIP"), "may not change once set"))
    return errors


def _core_event_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    involved = obj.get("involvedObject") or {}
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    object_ns = involved.get("namespace", "")
    if object_ns and namespace and object_ns != namespace:
        return [_invalid_value("involvedObject.namespace", object_ns, "does not match event.namespace")]
    return []


def _events_v1_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    """events.k8s.io/v1 requires what the new recorder always sends."""
    errors: list[FieldError] = []
    for field in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not obj.get(field):
            errors.append(_required(field))
    if obj.get("type") not in ("Normal", "Warning"):
        errors.append(_unsupported("type", obj.get("type", ""), ["Normal", "Warning"]))
    regarding_ns = (obj.get("regarding") or {}).get("namespace", "")
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    if regarding_ns and namespace and regarding_ns != namespace:
        errors.append(_invalid_value("regarding.namespace", regarding_ns, "does not match event.namespace"))
    return errors


_VALIDATORS = {
    DEPLOYMENTS.bucket: _deployment_errors,
    REPLICASETS.bucket: _replicaset_errors,
    JOBS.bucket: _job_errors,
    PODS.bucket: _pod_errors,
    SERVICES.bucket: _service_errors,
}


def validate(rt: ResourceType, obj: Obj, old: Obj | None = None, *, subresource: str | None = None) -> None:
    """Raise 422 Invalid when `obj` (defaulted; `old` = stored object on update) breaks a rule."""
    meta = obj.get("metadata") or {}
    errors = _name_errors(rt, meta) if old is None else []
    errors += _metadata_errors(meta)
    if subresource is None:
        if rt is EVENTS_V1:
            errors += _events_v1_errors(obj, old)
        elif rt is EVENTS:
            errors += _core_event_errors(obj, old)
        else:
            validator = _VALIDATORS.get(rt.bucket)
            if validator is not None:
                errors += validator(obj, old)
    if errors:
        raise invalid(rt, str(meta.get("name") or meta.get("generateName") or ""), errors)
