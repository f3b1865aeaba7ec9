"""The three PATCH flavours the Kubernetes API server accepts, on plain JSON-like data.

* `json_patch(doc, ops)` — RFC 6902 (`application/json-patch+json`): add, remove, replace, move,
  copy, test; JSON pointers with `~0`/`~1` escapes. A failing operation raises `PatchError`, which
  the API server answers with 422 Invalid (the message follows evanphx/json-patch, the library the
  real server uses). A body that is not a list of operations raises `PatchError(bad_request=True)` → 400.
* `merge_patch(doc, patch)` — RFC 7386 (`application/merge-patch+json`): maps merge, `null` deletes,
  everything else (lists included) replaces.
* `strategic_merge_patch(doc, patch, kind=...)` — Kubernetes' strategic merge
  (`application/strategic-merge-patch+json`): like merge patch, but lists of objects with a merge
  key (containers by `name`, ports by `containerPort`, ...) merge element by element, `finalizers`
  merge as a set, and the directives `$patch: replace|delete|merge`, `$retainKeys`,
  `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured.

The merge keys come from the Go API types' `patchMergeKey` tags; they are looked up by field name
(plus the one place where the same name means two things: a Service's `spec.ports` merge by `port`,
a container's `ports` by `containerPort`). `openapi.py` publishes the same table as
`x-kubernetes-patch-merge-key`, so `kubectl apply` computes patches the server merges the same way.

All functions return new data and never modify their arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sim.store import copy_json

# Field name → merge key, from the `patchStrategy:"merge" patchMergeKey:"…"` tags of the core and
# apps API types (the lists this simulator's kinds contain).
LIST_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
}

# Lists of scalars with `patchStrategy:"merge"`: merged as ordered sets.
PRIMITIVE_MERGE_LISTS: frozenset[str] = frozenset({"finalizers"})

# Fields with `patchStrategy:"retainKeys"` (a union type: setting one member clears the others).
RETAIN_KEYS_FIELDS: frozenset[str] = frozenset({"strategy", "volumes"})

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


class PatchError(Exception):
    """A patch that cannot be applied: 422 Invalid, or 400 BadRequest for a malformed body."""

    def __init__(self, message: str, *, bad_request: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.bad_request = bad_request


def merge_key_for(kind: str, path: Sequence[str], field: str) -> str | None:
    """The merge key of list `field` found under `path` (field names from the root) in an object of `kind`."""
    if field == "ports" and kind == "Service" and tuple(path) == ("spec",):
        return "port"
    return LIST_MERGE_KEYS.get(field)


# ----- RFC 6902 JSON patch -----


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer "{path}" must start with "/"')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"Unable to access invalid index: {token}: invalid index referenced: {path}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise PatchError(f"Unable to access invalid index: {index}: invalid index referenced: {path}")
    return index


def _parent(doc: Any, parts: list[str], path: str, op: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, allow_end=False)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    if not isinstance(node, (dict, list)):
        raise PatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    return node


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path, op)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")
        return parent[token]
    return parent[_index(parent, token, path, allow_end=False)]


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path, op)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    else:
        parent.insert(_index(parent, token, path, allow_end=True), value)
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, parts, path, op)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")
        return doc, parent.pop(token)
    return doc, parent.pop(_index(parent, token, path, allow_end=False))


def _replace(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path, "replace")
    token = parts[-1]
    if isinstance(parent, dict):
        # RFC 6902 4.3: the target location MUST exist for the operation to be successful.
        if token not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}: missing value")
        parent[token] = value
    else:
        parent[_index(parent, token, path, allow_end=False)] = value
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operation objects) to a copy of `doc`."""
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", bad_request=True)
    result = copy_json(doc)
    for operation in operations:
        if not isinstance(operation, dict):
            raise PatchError("json: cannot unmarshal into Go value of type jsonpatch.Operation", bad_request=True)
        op = operation.get("op")
        path = operation.get("path")
        if not isinstance(path, str):
            raise PatchError(f"{op} operation does not apply: path is missing")
        if op == "add":
            result = _add(result, path, copy_json(_value(operation, op)))
        elif op == "remove":
            result, _ = _remove(result, path)
        elif op == "replace":
            result = _replace(result, path, copy_json(_value(operation, op)))
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{op} operation does not apply: from is missing")
            if op == "move":
                if path.startswith(source + "/"):
                    raise PatchError(f'move operation does not apply: "from" {source} is a prefix of "path" {path}')
                result, value = _remove(result, source, "move")
            else:
                value = copy_json(_get(result, source, "copy"))
            result = _add(result, path, value, op)
        elif op == "test":
            expected = _value(operation, op)
            try:
                actual = _get(result, path, "test")
            except PatchError:
                actual = None
                if expected is not None:
                    raise PatchError(f"testing value {path} failed: test failed") from None
            if not _json_equal(actual, expected):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}")
    return result


def _value(operation: Mapping[str, Any], op: str) -> Any:
    if "value" not in operation:
        raise PatchError(f"{op} operation does not apply: value is missing")
    return operation["value"]


def _json_equal(a: Any, b: Any) -> bool:
    # JSON has one number type: 1 and 1.0 are equal, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


# ----- RFC 7386 merge patch -----


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch to a copy of `doc`."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    result: dict[str, Any] = copy_json(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge_patch(result.get(key), value)
        else:
            result[key] = copy_json(value)
    return result


# ----- strategic merge patch -----


def strategic_merge_patch(doc: Any, patch: Any, *, kind: str = "") -> Any:
    """Apply a Kubernetes strategic merge patch to a copy of `doc` (an object of `kind`)."""
    if not isinstance(patch, dict):
        raise PatchError("json: cannot unmarshal into Go value of type map[string]interface {}", bad_request=True)
    original = copy_json(doc) if isinstance(doc, dict) else {}
    merged = _merge_map(original, patch, kind, ())
    if merged is None:
        # `$patch: delete` at the top level empties the object.
        return {}
    return merged


def _merge_map(original: dict[str, Any], patch: Mapping[str, Any], kind: str,
               path: tuple[str, ...]) -> dict[str, Any] | None:
    """Merge `patch` into `original` (which is modified and returned); None means "delete this map"."""
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        replacement: dict[str, Any] = _clean({k: v for k, v in patch.items() if k != _DIRECTIVE}, kind, path)
        return replacement
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive}")
    retain = patch.get(_RETAIN_KEYS)
    if retain is not None and not isinstance(retain, list):
        raise PatchError(f"invalid value for $retainKeys: {retain!r}")

    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith(_SET_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"invalid value for {key}: must be a list")
            orders[key[len(_SET_ORDER):]] = value

    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith(_SET_ORDER):
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise PatchError(f"invalid value for {key}: must be a list")
            if isinstance(original.get(field), list):
                original[field] = [item for item in original[field] if item not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, kind, (*path, key))
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _merge_list(current if isinstance(current, list) else [], value, kind, path, key)
        else:
            original[key] = value

    for field, order in orders.items():
        if isinstance(original.get(field), list):
            original[field] = _apply_order(original[field], order, merge_key_for(kind, path, field))

    if retain is not None:
        keep = set(retain)
        for key in list(original):
            if key not in keep and key not in patch:
                del original[key]
    return original


def _merge_list(original: list[Any], patch: list[Any], kind: str, path: tuple[str, ...], field: str) -> list[Any]:
    merge_key = merge_key_for(kind, path, field)
    if field in PRIMITIVE_MERGE_LISTS:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(item)
        return result
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        # No merge strategy: the list is replaced (directives inside are dropped).
        if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
            patch = [item for item in patch if not (isinstance(item, dict) and _DIRECTIVE in item)]
        return [_clean(item, kind, (*path, field)) if isinstance(item, dict) else copy_json(item) for item in patch]

    if any(item.get(_DIRECTIVE) == "replace" for item in patch):
        # `{"$patch": "replace"}` as a list element: the rest of the patch list replaces the original.
        return [_clean(item, kind, (*path, field)) for item in patch if _DIRECTIVE not in item]

    result = [copy_json(item) for item in original]
    for item in patch:
        directive = item.get(_DIRECTIVE)
        if merge_key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {merge_key}")
        key_value = item[merge_key]
        position = next((i for i, existing in enumerate(result)
                         if isinstance(existing, dict) and existing.get(merge_key) == key_value), None)
        if directive == "delete":
            if position is not None:
                del result[position]
            continue
        if position is None:
            result.append(_clean(item, kind, (*path, field)))
        else:
            merged = _merge_map(result[position], item, kind, (*path, field))
            if merged is None:
                del result[position]
            else:
                result[position] = merged
    return result


def _apply_order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Reorder `items` as `$setElementOrder` says; items it does not name keep their place after those it does."""
    def identity(item: Any) -> Any:
        if merge_key is not None and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [identity(entry) if isinstance(entry, dict) else entry for entry in order]
    rank = {repr(value): index for index, value in enumerate(wanted)}
    indexed = list(enumerate(items))
    indexed.sort(key=lambda pair: (rank.get(repr(identity(pair[1])), len(rank)), pair[0]))
    return [item for _, item in indexed]


def _clean(value: Any, kind: str, path: tuple[str, ...]) -> Any:
    """A new value taken from a patch as-is: strip directives and nulls (they mean nothing without an original)."""
    if isinstance(value, dict):
        if value.get(_DIRECTIVE) == "delete":
            return {}
        merged = _merge_map({}, value, kind, path)
        return merged if merged is not None else {}
    if isinstance(value, list):
        return [_clean(item, kind, path) for item in value]
    return value
