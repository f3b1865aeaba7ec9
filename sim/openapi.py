"""The API schema of the simulated server: OpenAPI v3 documents for kubectl, and field checks for writes.

The schema is read from kubernetes_asyncio's generated models (each class lists its fields, their
JSON names and types), so it covers every field of the served kinds without a hand-written copy.

* `openapi_v3_root(url_prefix)` / `openapi_v3_document(gv)`: `/openapi/v3` and
  `/openapi/v3/apis/apps/v1` etc. What kubectl needs from them (read in kubectl and client-go):
  - `kubectl apply`/`create` validate with `--validate=strict` by default. kubectl asks the
    OpenAPI v3 document of the object's group-version whether the PATCH operation tagged with its
    `x-kubernetes-group-version-kind` has a `fieldValidation` query parameter; it has, so kubectl
    skips client-side validation and sends `fieldValidation=Strict`, which this server honours
    (unknown fields → 400 `strict decoding error: unknown field "spec.foo"`).
  - `kubectl apply` on an existing object computes a strategic merge patch from the component schema
    whose `x-kubernetes-group-version-kind` names the kind, using `x-kubernetes-patch-merge-key` /
    `x-kubernetes-patch-strategy` (published from `patch.py`'s table, so both sides agree).
  `/openapi/v2` is not served (client-go wants it as protobuf); kubectl only falls back to it when v3 fails.
* `check_fields(rt_kind, obj)`: decode-time checks a real server does when it turns JSON into Go
  structs — JSON types (a string where an integer belongs → 400), unknown fields (collected; the
  caller rejects, warns or ignores per `fieldValidation`, and they are always dropped), and
  timestamps (parsed in any RFC 3339 / ISO 8601 form, re-emitted as `Time` or `MicroTime`).
* `decode_protobuf(body)`: client-go's typed clients (`kubectl create deployment|namespace|job|...`)
  send `application/vnd.kubernetes.protobuf` and do not fall back to JSON on a 415, so the server
  reads that wire format too and turns it into the JSON the real server's Go structs would marshal.
  The field numbers come from `openapi/protobuf-fields.json`, a table derived from the
  `generated.proto` files and the Go struct tags (json name, omitempty, inline, pointer) of
  k8s.io/api and k8s.io/apimachinery for the served kinds. Responses are always JSON (clients
  accept it: they list `application/json` after protobuf).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_asyncio.client.models as k8s_models

from sim.patch import LIST_MERGE_KEYS, PRIMITIVE_MERGE_LISTS, RETAIN_KEYS_FIELDS
from sim.resources import ResourceType, group_versions
from sim.store import ApiError, Obj

# Served kinds → the kubernetes_asyncio model class that describes them.
_MODEL_OF: dict[tuple[str, str], str] = {
    ("", "Namespace"): "V1Namespace",
    ("", "Pod"): "V1Pod",
    ("", "Service"): "V1Service",
    ("", "ConfigMap"): "V1ConfigMap",
    ("", "Secret"): "V1Secret",
    ("", "Event"): "CoreV1Event",
    ("apps", "Deployment"): "V1Deployment",
    ("apps", "ReplicaSet"): "V1ReplicaSet",
    ("batch", "Job"): "V1Job",
    ("coordination.k8s.io", "Lease"): "V1Lease",
    ("events.k8s.io", "Event"): "EventsV1Event",
    ("autoscaling", "Scale"): "V1Scale",
}

# Fields typed `object` in the models that are really IntOrString.
_INT_OR_STRING = frozenset({"maxSurge", "maxUnavailable", "targetPort", "port", "minAvailable"})
# `dict(str, str)` fields whose values are resource Quantities (strings or numbers on the wire).
_QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "allocatable", "hard", "used", "overhead"})
# `MicroTime` fields (six fractional digits); every other date-time is a `Time` (whole seconds).
_MICRO_TIME = frozenset({"eventTime", "lastObservedTime", "acquireTime", "renewTime"})

_LIST_TYPE = re.compile(r"list\[(.+)\]")
_DICT_TYPE = re.compile(r"dict\(str, (.+)\)")


@dataclass
class Node:
    """One schema node: `type` is object, map, array, string, integer, number, boolean, datetime,
    int-or-string, quantity or any; `model` names the model class of an object node."""

    type: str
    model: str = ""
    item: Node | None = None
    props: dict[str, Node] = field(default_factory=dict)
    micro: bool = False


@functools.cache
def _object_node(model: str) -> Node:
    node = Node("object", model=model)
    cls = getattr(k8s_models, model)
    for attr, type_name in cls.openapi_types.items():
        json_name = cls.attribute_map[attr]
        node.props[json_name] = _node_for(type_name, json_name)
    return node


def _node_for(type_name: str, json_name: str) -> Node:
    simple = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "date": "string"}
    if type_name in simple:
        return Node(simple[type_name])
    if type_name == "datetime":
        return Node("datetime", micro=json_name in _MICRO_TIME)
    if type_name == "object":
        return Node("int-or-string" if json_name in _INT_OR_STRING else "any")
    list_match = _LIST_TYPE.fullmatch(type_name)
    if list_match:
        return Node("array", item=_node_for(list_match.group(1), json_name))
    dict_match = _DICT_TYPE.fullmatch(type_name)
    if dict_match:
        value_type = dict_match.group(1)
        if value_type == "str" and json_name in _QUANTITY_MAPS:
            return Node("map", item=Node("quantity"))
        return Node("map", item=_node_for(value_type, json_name))
    # A model class: resolved lazily so recursive types terminate.
    return Node("ref", model=type_name)


def _resolve(node: Node) -> Node:
    return _object_node(node.model) if node.type == "ref" else node


def kind_schema(group: str, kind: str) -> Node | None:
    """The schema of a served kind (None for kinds this server has no model for)."""
    model = _MODEL_OF.get((group, kind))
    return _object_node(model) if model else None


# ----- decode-time checks -----


_GO_TYPES = {"integer": "int32", "number": "float64", "boolean": "bool", "string": "string",
             "datetime": "string", "quantity": "resource.Quantity"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 timestamp (`Z`, offsets, any fraction); naive means UTC."""
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime, *, micro: bool) -> str:
    if micro:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical_quantity(value: int | float) -> str:
    """A number sent where a Quantity belongs, in the canonical string form (1 → "1", 0.5 → "500m")."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    milli = round(value * 1000)
    if abs(value * 1000 - milli) < 1e-9:
        return f"{milli}m"
    return repr(value)


@dataclass
class FieldReport:
    """What `check_fields` found: unknown field paths (already removed) and type errors."""

    unknown: list[str] = field(default_factory=list)
    type_errors: list[str] = field(default_factory=list)


def check_fields(group: str, kind: str, obj: Obj) -> FieldReport:
    """Check `obj` against the kind's schema in place: drop unknown fields, normalise times, note type errors."""
    report = FieldReport()
    schema = kind_schema(group, kind)
    if schema is not None:
        _walk(schema, obj, "", report)
    return report


def _go_type_name(model: str) -> str:
    """`V1DeploymentSpec` → `DeploymentSpec`, `CoreV1Event` → `Event` (the Go struct's name)."""
    return re.sub(r"^(Core|Events)?V\d+((alpha|beta)\d+)?", "", model)


def _walk(node: Node, value: Any, path: str, report: FieldReport, owner: str = "") -> Any:
    """Return the (possibly normalised) value; record problems in `report`. `owner` is the enclosing struct."""
    node = _resolve(node)
    kind = node.type
    if kind == "any":
        return value
    if kind == "object":
        if not isinstance(value, dict):
            report.type_errors.append(_type_error(node, value, path, owner, "struct"))
            return value
        for key in list(value):
            child = node.props.get(key)
            child_path = f"{path}.{key}" if path else key
            if child is None:
                report.unknown.append(child_path)
                del value[key]
                continue
            value[key] = _walk(child, value[key], child_path, report, _go_type_name(node.model))
        return value
    if kind == "map":
        if not isinstance(value, dict):
            report.type_errors.append(_type_error(node, value, path, owner, "map[string]string"))
            return value
        assert node.item is not None
        for key in list(value):
            value[key] = _walk(node.item, value[key], f"{path}.{key}", report, owner)
        return value
    if kind == "array":
        if not isinstance(value, list):
            report.type_errors.append(_type_error(node, value, path, owner, "[]interface {}"))
            return value
        assert node.item is not None
        for index, item in enumerate(value):
            value[index] = _walk(node.item, item, f"{path}[{index}]", report, owner)
        return value
    return _scalar(node, value, path, report, owner)


def _scalar(node: Node, value: Any, path: str, report: FieldReport, owner: str) -> Any:
    kind = node.type
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "int-or-string":
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
    elif kind == "quantity":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _canonical_quantity(value)
        ok = isinstance(value, str)
    elif kind == "datetime":
        if not isinstance(value, str):
            ok = False
        else:
            try:
                return format_time(parse_time(value), micro=node.micro)
            except ValueError:
                report.type_errors.append(
                    f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" as "2006"')
                return value
    else:  # pragma: no cover - every node type is handled above
        ok = True
    if not ok:
        report.type_errors.append(_type_error(node, value, path, owner, _GO_TYPES.get(kind, "string")))
    return value


def _type_error(node: Node, value: Any, path: str, owner: str, go_type: str) -> str:
    if node.type == "int-or-string":
        return f"json: cannot unmarshal {_json_type(value)} into Go value of type intstr.IntOrString"
    return f"json: cannot unmarshal {_json_type(value)} into Go struct field {owner}.{path} of type {go_type}"


def decode_error(kind: str, version: str, message: str) -> ApiError:
    """400 for a body that cannot be decoded, worded like the real server."""
    return ApiError(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {message}')


# ----- OpenAPI v3 documents -----


def _schema_name(model: str) -> str:
    return f"io.k8s.sim.{model}"


def _ref(model: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{_schema_name(model)}"}]}


def _property_schema(owner: str, name: str, node: Node, models: set[str]) -> dict[str, Any]:
    schema = _node_schema(node, models)
    if node.type == "array" and node.item is not None:
        item = node.item
        merge_key = "port" if (owner, name) == ("V1ServiceSpec", "ports") else LIST_MERGE_KEYS.get(name)
        if item.type == "ref" and merge_key and merge_key in _object_node(item.model).props:
            schema["x-kubernetes-patch-merge-key"] = merge_key
            schema["x-kubernetes-patch-strategy"] = "merge,retainKeys" if name in RETAIN_KEYS_FIELDS else "merge"
        elif item.type == "string" and name in PRIMITIVE_MERGE_LISTS:
            schema["x-kubernetes-patch-strategy"] = "merge"
    elif node.type == "ref" and name in RETAIN_KEYS_FIELDS:
        schema["x-kubernetes-patch-strategy"] = "retainKeys"
    return schema


def _node_schema(node: Node, models: set[str]) -> dict[str, Any]:
    kind = node.type
    if kind == "ref":
        models.add(node.model)
        return _ref(node.model)
    if kind == "array":
        assert node.item is not None
        return {"type": "array", "items": _node_schema(node.item, models)}
    if kind == "map":
        assert node.item is not None
        return {"type": "object", "additionalProperties": _node_schema(node.item, models)}
    if kind == "datetime":
        return {"type": "string", "format": "date-time"}
    if kind in ("int-or-string", "quantity"):
        return {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    if kind == "any":
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if kind == "integer":
        return {"type": "integer", "format": "int64"}
    if kind == "number":
        return {"type": "number", "format": "double"}
    return {"type": kind}


def _components(roots: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Component schemas for the root models (with their GVKs) and everything they reference."""
    schemas: dict[str, Any] = {}
    pending = list(roots)
    seen: set[str] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        node = _object_node(model)
        referenced: set[str] = set()
        properties = {name: _property_schema(model, name, child, referenced) for name, child in node.props.items()}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if model in roots:
            schema["x-kubernetes-group-version-kind"] = roots[model]
        schemas[_schema_name(model)] = schema
        pending.extend(referenced - seen)
    schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Patch"] = {
        "type": "object",
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}
    return schemas


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": True}}


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All")
_FIELD_MANAGER = _query("fieldManager", "a name associated with the actor or entity that is making these changes.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request containing unknown or "
    "duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.")
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")


def _operation(action: str, gvk: dict[str, str], model: str, operation_id: str, *,
               body: str | None = None, extra: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "parameters": list(extra),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": _ref(model)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if body == "patch":
        patch_ref = {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
        operation["requestBody"] = {"content": {t: {"schema": patch_ref} for t in _PATCH_TYPES}, "required": True}
    elif body == "object":
        operation["requestBody"] = {"content": {"*/*": {"schema": _ref(model)}}, "required": True}
    return operation


def _resource_paths(rt: ResourceType, roots: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    model = _MODEL_OF[(rt.group, rt.kind)]
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    roots.setdefault(model, [gvk])
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ns_param = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
    scope = [ns_param] if rt.namespaced else []
    op_kind = rt.kind
    writes = (_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION)
    paths: dict[str, Any] = {
        base: {
            "get": _operation("list", gvk, model, f"list{op_kind}"),
            "post": _operation("post", gvk, model, f"create{op_kind}", body="object", extra=writes),
            "delete": _operation("deletecollection", gvk, model, f"deletecollection{op_kind}", extra=(_DRY_RUN,)),
            "parameters": scope,
        },
        f"{base}/{{name}}": {
            "get": _operation("get", gvk, model, f"read{op_kind}"),
            "put": _operation("put", gvk, model, f"replace{op_kind}", body="object", extra=writes),
            "patch": _operation("patch", gvk, model, f"patch{op_kind}", body="patch", extra=writes),
            "delete": _operation("delete", gvk, model, f"delete{op_kind}", extra=(_DRY_RUN,)),
            "parameters": [name_param, *scope],
        },
    }
    for sub in rt.subresources:
        if sub == "log":
            continue
        if sub == "scale":
            sub_model, sub_gvk = "V1Scale", {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            roots.setdefault(sub_model, [sub_gvk])
        else:
            sub_model, sub_gvk = model, gvk
        title = sub.capitalize()
        paths[f"{base}/{{name}}/{sub}"] = {
            "get": _operation("get", sub_gvk, sub_model, f"read{op_kind}{title}"),
            "put": _operation("put", sub_gvk, sub_model, f"replace{op_kind}{title}", body="object", extra=writes),
            "patch": _operation("patch", sub_gvk, sub_model, f"patch{op_kind}{title}", body="patch", extra=writes),
            "parameters": [name_param, *scope],
        }
    if rt.namespaced:
        paths[f"{prefix}/{rt.plural}"] = {"get": _operation("list", gvk, model, f"list{op_kind}ForAllNamespaces")}
    return paths


def _gv_path(group_version: str) -> str:
    return f"api/{group_version}" if "/" not in group_version else f"apis/{group_version}"


@functools.cache
def openapi_v3_document(group_version: str) -> bytes:
    """The OpenAPI v3 document of one served group-version (`v1`, `apps/v1`, ...), as JSON bytes."""
    resources = group_versions()[group_version]
    roots: dict[str, list[dict[str, str]]] = {}
    paths: dict[str, Any] = {}
    for rt in resources:
        paths.update(_resource_paths(rt, roots))
    document = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (rollguard simulator)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": _components(roots)},
    }
    return json.dumps(document, separators=(",", ":")).encode()


@functools.cache
def _document_hashes() -> dict[str, str]:
    return {gv: hashlib.sha512(openapi_v3_document(gv)).hexdigest()[:128].upper() for gv in group_versions()}


def openapi_v3_root() -> bytes:
    """`/openapi/v3`: where each group-version's document lives (URLs carry a content hash, as real ones do)."""
    paths = {_gv_path(gv): {"serverRelativeURL": f"/openapi/v3/{_gv_path(gv)}?hash={digest}"}
             for gv, digest in _document_hashes().items()}
    return json.dumps({"paths": paths}, separators=(",", ":")).encode()


def group_version_of_path(path: str) -> str | None:
    """`apis/apps/v1` → `apps/v1`, `api/v1` → `v1`; None when the group-version is not served."""
    for gv in group_versions():
        if _gv_path(gv) == path.strip("/"):
            return gv
    return None



# ----- Kubernetes protobuf -----

PROTOBUF_MAGIC = b"k8s\x00"
_PROTOBUF_FIELDS = Path(__file__).parent / "openapi" / "protobuf-fields.json"
# (apiVersion, kind) → message name in the field table.
_PROTOBUF_GROUPS = {"v1": "core.v1", "apps/v1": "apps.v1", "batch/v1": "batch.v1",
                    "coordination.k8s.io/v1": "coordination.v1", "events.k8s.io/v1": "events.v1",
                    "autoscaling/v1": "autoscaling.v1"}
_META_KINDS = {"DeleteOptions"}


class ProtobufError(ValueError):
    """A protobuf body this server cannot read."""


@functools.cache
def _protobuf_tables() -> dict[str, dict[int, tuple[str, str, str]]]:
    raw: dict[str, list[list[Any]]] = json.loads(_PROTOBUF_FIELDS.read_text())
    return {message: {int(row[0]): (str(row[1]), str(row[2]), str(row[3])) for row in rows}
            for message, rows in raw.items()}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _wire_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as int, length-delimited as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            fields.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            fields.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            fields.append((number, data[pos:pos + 8]))
            pos += 8
        elif wire == 5:
            fields.append((number, data[pos:pos + 4]))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return fields


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _special(kind: str, data: bytes) -> Any:
    parts = dict(_wire_fields(data))
    if kind in ("time", "microtime"):
        seconds = _signed(int(parts.get(1, 0)))
        nanos = int(parts.get(2, 0))
        if seconds == 0 and nanos == 0:
            return None  # Go's zero Time marshals as null
        moment = datetime.fromtimestamp(seconds + nanos / 1e9, UTC)
        return format_time(moment, micro=kind == "microtime")
    if kind == "quantity":
        return bytes(parts.get(1, b"")).decode()
    if kind == "intorstring":
        if int(parts.get(1, 0)) == 1:
            return bytes(parts.get(3, b"")).decode()
        return _signed(int(parts.get(2, 0)))
    if kind == "raw":
        raw = bytes(parts.get(1, b""))
        return json.loads(raw) if raw else None
    if kind == "duration":
        nanoseconds = _signed(int(parts.get(1, 0)))
        return f"{nanoseconds / 1e9:g}s"
    raise ProtobufError(f"unknown special type {kind}")


def _scalar_value(kind: str, value: int | bytes) -> Any:
    if kind == "string":
        return bytes(value).decode() if isinstance(value, bytes) else str(value)
    if kind == "int":
        return _signed(int(value)) if isinstance(value, int) else int.from_bytes(value, "little", signed=True)
    if kind == "bool":
        return bool(value)
    if kind == "float":
        return struct.unpack("<d", value)[0] if isinstance(value, bytes) else float(value)
    if kind == "bytes":
        return base64.b64encode(bytes(value) if isinstance(value, bytes) else b"").decode()
    if kind.startswith("message:"):
        return _decode_message(kind[len("message:"):], bytes(value) if isinstance(value, bytes) else b"")
    return _special(kind, bytes(value) if isinstance(value, bytes) else b"")


def _is_zero(value: Any) -> bool:
    return value is None or (not isinstance(value, (dict, list)) and not value)


def _decode_message(message: str, data: bytes) -> dict[str, Any]:
    table = _protobuf_tables().get(message)
    if table is None:
        raise ProtobufError(f"no protobuf field table for {message}")
    out: dict[str, Any] = {}
    for number, raw in _wire_fields(data):
        spec = table.get(number)
        if spec is None or spec[1] == "skip":
            continue  # a field newer than the table: dropped, like an unknown JSON field
        name, kind, flags = spec
        if "m" in flags:
            entry = dict(_wire_fields(bytes(raw) if isinstance(raw, bytes) else b""))
            key = bytes(entry.get(1, b"")).decode()
            out.setdefault(name, {})[key] = _scalar_value(kind, entry.get(2, b"" if kind != "int" else 0))
            continue
        if "r" in flags and kind == "int" and isinstance(raw, bytes):
            # A packed repeated integer field.
            pos = 0
            while pos < len(raw):
                item, pos = _varint(raw, pos)
                out.setdefault(name, []).append(_signed(item))
            continue
        value = _scalar_value(kind, raw)
        if "r" in flags:
            out.setdefault(name, []).append(value)
        elif "i" in flags and isinstance(value, dict):
            out.update(value)  # an embedded struct inlined in JSON
        elif value is None or ("o" in flags and "p" not in flags and _is_zero(value)):
            continue  # what Go's `omitempty` leaves out (pointers keep explicit zeroes)
        else:
            out[name] = value
    return out


def decode_protobuf(body: bytes) -> dict[str, Any]:
    """The JSON form of a Kubernetes protobuf request body (`k8s\\0` + runtime.Unknown envelope)."""
    if not body.startswith(PROTOBUF_MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic number")
    envelope = dict(_wire_fields(body[len(PROTOBUF_MAGIC):]))
    type_meta = dict(_wire_fields(bytes(envelope.get(1, b""))))
    api_version = bytes(type_meta.get(1, b"")).decode()
    kind = bytes(type_meta.get(2, b"")).decode()
    group = "meta.v1" if kind in _META_KINDS else _PROTOBUF_GROUPS.get(api_version)
    if group is None:
        raise ProtobufError(f"no protobuf decoding for {api_version} {kind}")
    obj = _decode_message(f"{group}.{kind}", bytes(envelope.get(2, b"")))
    return {"kind": kind, "apiVersion": api_version, **obj}
