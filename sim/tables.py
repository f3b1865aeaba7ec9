"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...` and prints the server's
columns as they come (priority-1 columns only with `-o wide`). The column sets and cell rules follow
the real server's printers (`pkg/printers/internalversion/printers.go`); the server always fills
the wide cells and kubectl hides them. Ages are measured on the simulated cluster's clock.

`table(rt, objects, now=..., include_object=...)` builds the Table; `partial_metadata(obj)` is the
`PartialObjectMetadata` that rows carry by default (`includeObject=Metadata`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sim.openapi import parse_time
from sim.selectors import label_selector_string
from sim.store import Obj

Cells = list[Any]
Column = dict[str, Any]

_NONE = "<none>"


def human_duration(seconds: float) -> str:
    """Go's `duration.HumanDuration`: 45s, 5m3s, 3h20m, 4d2h, 2y30d."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def since(timestamp: Any, now: float) -> str:
    """Age of an RFC 3339 timestamp (`<unknown>` when unset), like `translateTimestampSince`."""
    if not timestamp:
        return "<unknown>"
    try:
        moment: datetime = parse_time(str(timestamp))
    except ValueError:
        return "<unknown>"
    return human_duration(now - moment.timestamp())


def _column(name: str, kind: str, description: str, *, priority: int = 0, fmt: str = "") -> Column:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": priority}


_NAME = _column("Name", "string", "Name must be unique within a namespace.", fmt="name")
_AGE = _column("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object "
               "was created.")
_CONTAINERS = _column("Containers", "string", "Names of each container in the template.", priority=1)
_IMAGES = _column("Images", "string", "Images referenced by each container in the template.", priority=1)
_SELECTOR = _column("Selector", "string", "Label selector for pods.", priority=1)


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _age(obj: Obj, now: float) -> str:
    return since(_meta(obj).get("creationTimestamp"), now)


def _template_containers(spec: Mapping[str, Any]) -> tuple[str, str]:
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or []
    return (",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers))


def _deployment_row(obj: Obj, now: float) -> Cells:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    names, images = _template_containers(spec)
    return [_meta(obj).get("name", ""), f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
            int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0), _age(obj, now),
            names, images, label_selector_string(spec.get("selector"))]


def _replicaset_row(obj: Obj, now: float) -> Cells:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    names, images = _template_containers(spec)
    return [_meta(obj).get("name", ""), int(spec.get("replicas") or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), _age(obj, now), names, images,
            label_selector_string(spec.get("selector"))]


def _container_reason(statuses: Sequence[Mapping[str, Any]], initial: str) -> tuple[str, int, int, bool]:
    """(reason, restarts, ready count, has running) over container statuses, as printPod walks them."""
    reason = initial
    restarts = 0
    ready = 0
    has_running = False
    for status in reversed(list(statuses)):
        restarts += int(status.get("restartCount") or 0)
        state = status.get("state") or {}
        waiting = state.get("waiting")
        terminated = state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated:
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif state.get("running") and status.get("ready"):
            has_running = True
            ready += 1
    return reason, restarts, ready, has_running


def _last_restart(statuses: Sequence[Mapping[str, Any]]) -> str | None:
    latest: str | None = None
    for status in statuses:
        finished = ((status.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if finished and (latest is None or str(finished) > latest):
            latest = str(finished)
    return latest


def _pod_row(obj: Obj, now: float) -> Cells:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    total = len(spec.get("containers") or [])
    reason = str(status.get("reason") or status.get("phase") or "")
    init_statuses = status.get("initContainerStatuses") or []
    restarts = 0
    initializing = False
    init_count = len(spec.get("initContainers") or [])
    for index, init in enumerate(init_statuses):
        restarts += int(init.get("restartCount") or 0)
        state = init.get("state") or {}
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if terminated and int(terminated.get("exitCode", 0)) == 0:
            continue
        if terminated:
            reason = "Init:" + str(terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + str(waiting["reason"])
        else:
            reason = f"Init:{index}/{init_count}"
        initializing = True
        break
    ready = 0
    statuses = status.get("containerStatuses") or []
    if not initializing:
        reason, container_restarts, ready, has_running = _container_reason(statuses, reason)
        restarts += container_restarts
        if reason == "Completed" and has_running:
            ready_condition = any(c.get("type") == "Ready" and c.get("status") == "True"
                                  for c in status.get("conditions") or [])
            reason = "Running" if ready_condition else "NotReady"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restarts_text = str(restarts)
    last = _last_restart(list(statuses) + list(init_statuses))
    if restarts and last:
        restarts_text = f"{restarts} ({since(last, now)} ago)"
    gates = spec.get("readinessGates") or []
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        passing = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gates_text = f"{passing}/{len(gates)}"
    else:
        gates_text = _NONE
    return [meta.get("name", ""), f"{ready}/{total}", reason, restarts_text, _age(obj, now),
            status.get("podIP") or _NONE, spec.get("nodeName") or _NONE,
            status.get("nominatedNodeName") or _NONE, gates_text]


def _pod_conditions(obj: Obj) -> list[dict[str, str]] | None:
    phase = (obj.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return [{"type": "Completed", "status": "True", "reason": str(phase),
                 "message": "The pod has completed successfully." if phase == "Succeeded"
                 else "The pod failed."}]
    return None


def _job_status(obj: Obj) -> str:
    conditions = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
    for kind, text in (("Complete", "Complete"), ("Failed", "Failed"), ("FailureTarget", "FailureTarget"),
                       ("SuccessCriteriaMet", "SuccessCriteriaMet"), ("Suspended", "Suspended")):
        if conditions.get(kind) == "True":
            return text
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_row(obj: Obj, now: float) -> Cells:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    completions = spec.get("completions")
    succeeded = int(status.get("succeeded") or 0)
    if completions is not None:
        completion_text = f"{succeeded}/{completions}"
    else:
        parallelism = int(spec.get("parallelism") or 0)
        completion_text = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start = status.get("startTime")
    end = status.get("completionTime")
    if start and end:
        duration = human_duration(parse_time(str(end)).timestamp() - parse_time(str(start)).timestamp())
    elif start:
        duration = since(start, now)
    else:
        duration = ""
    names, images = _template_containers(spec)
    return [_meta(obj).get("name", ""), _job_status(obj), completion_text, duration, _age(obj, now), names, images,
            label_selector_string(spec.get("selector"))]


def _service_ports(spec: Mapping[str, Any]) -> str:
    ports = spec.get("ports") or []
    if not ports:
        return _NONE
    parts = []
    for port in ports:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts)


def _service_external_ip(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    kind = spec.get("type")
    external = list(spec.get("externalIPs") or [])
    if kind == "ExternalName":
        return str(spec.get("externalName") or _NONE)
    if kind == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        addresses = [str(i.get("ip") or i.get("hostname")) for i in ingress] + external
        return ",".join(addresses) if addresses else "<pending>"
    return ",".join(external) if external else _NONE


def _service_row(obj: Obj, now: float) -> Cells:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if selector else _NONE
    return [_meta(obj).get("name", ""), spec.get("type", ""), spec.get("clusterIP") or _NONE,
            _service_external_ip(obj), _service_ports(spec), _age(obj, now), selector_text]


def _namespace_row(obj: Obj, now: float) -> Cells:
    return [_meta(obj).get("name", ""), (obj.get("status") or {}).get("phase", ""), _age(obj, now)]


def _configmap_row(obj: Obj, now: float) -> Cells:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_meta(obj).get("name", ""), count, _age(obj, now)]


def _secret_row(obj: Obj, now: float) -> Cells:
    count = len(obj.get("data") or {}) + len(obj.get("stringData") or {})
    return [_meta(obj).get("name", ""), obj.get("type", ""), count, _age(obj, now)]


def _lease_row(obj: Obj, now: float) -> Cells:
    holder = (obj.get("spec") or {}).get("holderIdentity") or ""
    return [_meta(obj).get("name", ""), holder, _age(obj, now)]


def _event_source(obj: Obj) -> str:
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingComponent") or ""
    host = source.get("host") or obj.get("reportingInstance") or ""
    return f"{component}, {host}" if host else str(component)


def _event_row(obj: Obj, now: float) -> Cells:
    """A core/v1-shaped Event (the events.k8s.io view is converted before printing)."""
    first = since(obj.get("firstTimestamp"), now) if obj.get("firstTimestamp") else since(obj.get("eventTime"), now)
    last = since(obj.get("lastTimestamp"), now) if obj.get("lastTimestamp") else first
    count = int(obj.get("count") or 0)
    series = obj.get("series")
    if series:
        last = since(series.get("lastObservedTime"), now)
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    involved = obj.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [last, obj.get("type", ""), obj.get("reason", ""), target, involved.get("fieldPath", ""),
            _event_source(obj), str(obj.get("message", "")).strip(), first, count, _meta(obj).get("name", "")]


_TABLES: dict[str, tuple[list[Column], Callable[[Obj, float], Cells]]] = {
    "deployments.apps": ([
        _NAME,
        _column("Ready", "string", "Number of the pod with ready state"),
        _column("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that "
                "have the desired template spec."),
        _column("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) "
                "targeted by this deployment."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR], _deployment_row),
    "replicasets.apps": ([
        _NAME,
        _column("Desired", "integer", "Replicas is the number of desired pods."),
        _column("Current", "integer", "Replicas is the most recently observed number of replicas."),
        _column("Ready", "integer", "The number of ready replicas for this replica set."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR], _replicaset_row),
    "pods": ([
        _NAME,
        _column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
        _column("Status", "string", "The aggregate status of the containers in this pod."),
        _column("Restarts", "string", "The number of times the containers in this pod have been restarted and "
                "when the last container in this pod has restarted."),
        _AGE,
        _column("IP", "string", "IP address allocated to the pod.", priority=1),
        _column("Node", "string", "Name of the node this pod is assigned to.", priority=1),
        _column("Nominated Node", "string", "Name of the node this pod is nominated to.", priority=1),
        _column("Readiness Gates", "string", "Pod readiness gates.", priority=1)], _pod_row),
    "jobs.batch": ([
        _NAME,
        _column("Status", "string", "Status of the job."),
        _column("Completions", "string", "The completion status of the job."),
        _column("Duration", "string", "Time required to complete the job."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR], _job_row),
    "services": ([
        _NAME,
        _column("Type", "string", "The type of the service."),
        _column("Cluster-IP", "string", "The cluster IP of the service."),
        _column("External-IP", "string", "The external IP of the service."),
        _column("Port(s)", "string", "The ports of the service."),
        _AGE,
        _column("Selector", "string", "Route service traffic to pods with label keys and values matching this "
                "selector.", priority=1)], _service_row),
    "namespaces": ([
        _NAME,
        _column("Status", "string", "The status of the namespace"),
        _AGE], _namespace_row),
    "configmaps": ([
        _NAME,
        _column("Data", "string", "Data contains the configuration data."),
        _AGE], _configmap_row),
    "secrets": ([
        _NAME,
        _column("Type", "string", "The type of the secret"),
        _column("Data", "string", "The number of data entries in the secret"),
        _AGE], _secret_row),
    "leases.coordination.k8s.io": ([
        _NAME,
        _column("Holder", "string", "The holder of the lease."),
        _AGE], _lease_row),
    "events": ([
        _column("Last Seen", "string", "Last time the event was observed."),
        _column("Type", "string", "Type of this event."),
        _column("Reason", "string", "Short, machine understandable string that gives the reason for this event."),
        _column("Object", "string", "The object this event is about."),
        _column("Subobject", "string", "The subobject this event is about.", priority=1),
        _column("Source", "string", "The component reporting this event.", priority=1),
        _column("Message", "string", "A human-readable description of the status of this operation."),
        _column("First Seen", "string", "The time at which the event was first recorded.", priority=1),
        _column("Count", "string", "The number of times this event has occurred.", priority=1),
        _column("Name", "string", "Name must be unique within a namespace.", priority=1)], _event_row),
}
# events.k8s.io/v1 Events print like core ones (the real server shares the printer).
_TABLES["events.events.k8s.io"] = _TABLES["events"]

_DEFAULT_TABLE: tuple[list[Column], Callable[[Obj, float], Cells]] = (
    [_NAME, _column("Created At", "date", "CreationTimestamp is a timestamp representing the server time when "
                    "this object was created.")],
    lambda obj, now: [_meta(obj).get("name", ""), _meta(obj).get("creationTimestamp", "")])


def partial_metadata(obj: Obj, *, api_version: str = "meta.k8s.io/v1") -> Obj:
    """The `PartialObjectMetadata` of an object (its metadata only)."""
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata") or {}}


def table(qualified: str, objects: Sequence[Obj], *, now: float, resource_version: str = "",
          include_object: str = "Metadata", no_headers: bool = False, api_version: str = "meta.k8s.io/v1",
          continue_token: str = "", convert: Callable[[Obj], Obj] | None = None) -> Obj:
    """A Table of `objects`. `convert` turns a stored object into the printed shape (core Events).

    `include_object`: None (rows carry no object), Metadata (PartialObjectMetadata) or Object (the
    whole object, which `kubectl get -o wide --show-labels` and `-o yaml` do not need but clients may ask for).
    """
    column_defs, row_of = _TABLES.get(qualified, _DEFAULT_TABLE)
    rows = []
    for obj in objects:
        printed = convert(obj) if convert is not None else obj
        row: Obj = {"cells": row_of(printed, now)}
        if qualified == "pods":
            conditions = _pod_conditions(obj)
            if conditions:
                row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = partial_metadata(obj, api_version=api_version)
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    result: Obj = {"kind": "Table", "apiVersion": api_version, "metadata": metadata,
                   "columnDefinitions": None if no_headers else column_defs, "rows": rows}
    return result
