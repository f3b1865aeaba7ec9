"""CustomResourceDefinitions registered at run time, as the real apiextensions-apiserver serves them.

A CRD is an ordinary stored object (`customresourcedefinitions.apiextensions.k8s.io`, cluster-scoped).
Once stored it is "Established" at once (the real server takes a moment), and each of its `served`
versions appears in discovery and is served at `/apis/{group}/{version}/...` like a built-in type,
from the same Store (one bucket per CRD, shared by all its versions: no conversion is simulated).

What differs from built-in types, as on a real server:

- `metadata.generation` is kept; with the `status` subresource it is bumped by changes outside
  `metadata` and `status`, the main endpoint ignores `status` and `/status` ignores everything but it;
  without it, any change outside `metadata` bumps it and `status` is written with the rest.
- strategic merge patch is refused with 415 (the real server supports only JSON patch, merge patch
  and apply for custom resources: there is no Go struct to carry the patch strategies).
- the request body is not checked against the CRD's schema (no pruning, no defaulting).

The API server asks this module for a request's `ResourceType` (`find`), discovery (`group_versions`)
and the custom-resource steps of create and update (`prepare_create`, `prepare_update`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim import resources
from sim.resources import ResourceType
from sim.store import ApiError, Obj, Store

CRDS = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                    namespaced=False, singular="customresourcedefinition", short_names=("crd", "crds"),
                    subresources=("status",), has_generation=True)
"""The CRD type itself: served like a built-in type."""

CR_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
"""What a real server accepts for a PATCH of a custom resource (named in its 415 message)."""

_BUILT_IN_CRD = {"apiextensions.k8s.io/v1": [CRDS]}


def _served_types(crd: Obj) -> list[ResourceType]:
    """One ResourceType per served version of an established CRD (storage bucket: the CRD's name)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    scope_namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    types = []
    for version in spec.get("versions") or []:
        if not isinstance(version, Mapping) or not version.get("served", True):
            continue
        subresources = tuple(sorted((version.get("subresources") or {}).keys()))
        types.append(ResourceType(
            str(spec.get("group", "")), str(version.get("name", "")), str(names.get("plural", "")),
            str(names.get("kind", "")), namespaced=scope_namespaced, singular=str(names.get("singular", "")),
            short_names=tuple(names.get("shortNames") or ()), subresources=subresources,
            categories=tuple(names.get("categories") or ()), has_generation=True,
            storage=str(crd["metadata"]["name"])))
    return types


def custom_types(store: Store) -> list[ResourceType]:
    """Every resource type served by a stored CRD, in name order."""
    objects, _ = store.list_objects(CRDS)
    return [rt for crd in objects for rt in _served_types(crd)]


def is_custom(rt: ResourceType) -> bool:
    """Whether `rt` is served from a CRD (its bucket is the CRD's `plural.group` name)."""
    return rt.group != "" and rt.storage == rt.qualified and rt is not CRDS


def find(store: Store, group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at `/apis/{group}/{version}/{plural}`: built in, the CRD type, or a stored CRD's."""
    found = resources.find(group, version, plural)
    if found is not None:
        return found
    if (group, version, plural) == (CRDS.group, CRDS.version, CRDS.plural):
        return CRDS
    for rt in custom_types(store):
        if (rt.group, rt.version, rt.plural) == (group, version, plural):
            return rt
    return None


def group_versions(store: Store) -> dict[str, list[ResourceType]]:
    """Discovery: the built-in group-versions, then apiextensions, then each CRD's served versions."""
    out = resources.group_versions()
    for group_version, types in _BUILT_IN_CRD.items():
        out.setdefault(group_version, []).extend(types)
    for rt in custom_types(store):
        out.setdefault(rt.api_version, []).append(rt)
    return out


def check_patch_type(rt: ResourceType, content_type: str) -> None:
    """Raise the real server's 415 for a strategic merge patch of a custom resource."""
    if is_custom(rt) and content_type == "application/strategic-merge-patch+json":
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       + ", ".join(CR_PATCH_TYPES))


def _crd_errors(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    errors = []
    for field in ("plural", "kind"):
        if not names.get(field):
            errors.append(f"spec.names.{field}: Required value")
    if not spec.get("group"):
        errors.append("spec.group: Required value")
    if not spec.get("versions"):
        errors.append("spec.versions: Invalid value: null: must have exactly one version marked as storage version")
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if obj["metadata"].get("name") != expected:
        errors.append(f'metadata.name: Invalid value: "{obj["metadata"].get("name")}": must be spec.names.plural+"."'
                      f"+spec.group")
    return errors


def prepare_create(rt: ResourceType, obj: Obj) -> None:
    """CRD: validated and Established at once. Custom resource with a status subresource: no status."""
    if rt is CRDS:
        errors = _crd_errors(obj)
        if errors:
            name = obj["metadata"].get("name", "")
            raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: '
                           + ", ".join(errors), details={"name": name, "group": rt.group, "kind": rt.kind})
        names = (obj.get("spec") or {}).get("names") or {}
        accepted: dict[str, Any] = {"plural": names["plural"], "kind": names["kind"],
                                    "singular": names.get("singular") or str(names["kind"]).lower(),
                                    "listKind": names.get("listKind") or f"{names['kind']}List"}
        obj["status"] = {"acceptedNames": accepted, "storedVersions": [
            v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "message": "no conflicts found"},
                           {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "message": "the initial names have been accepted"}]}
    elif is_custom(rt) and "status" in rt.subresources:
        obj.pop("status", None)


def prepare_update(rt: ResourceType, old: Obj, new: Obj, *, subresource: str | None) -> None:
    """The spec/status split and the generation rule of custom resources (after the built-in step)."""
    if not is_custom(rt) and rt is not CRDS:
        return
    has_status = "status" in rt.subresources
    meta = new.setdefault("metadata", {})
    if subresource == "status":
        for key in [k for k in old if k not in ("metadata", "status", "kind", "apiVersion")]:
            new[key] = old[key]
        for key in [k for k in new if k not in old and k not in ("metadata", "status", "kind", "apiVersion")]:
            del new[key]
        return
    if has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    ignored = ("metadata", "status", "kind", "apiVersion") if has_status else ("metadata", "kind", "apiVersion")
    before = {k: v for k, v in old.items() if k not in ignored}
    after = {k: v for k, v in new.items() if k not in ignored}
    if before != after:
        meta["generation"] = int((old.get("metadata") or {}).get("generation") or 0) + 1
