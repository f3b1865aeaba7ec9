"""The simulated Kubernetes API server: real HTTP over the in-memory Store, for kubectl and kubernetes_asyncio.

`build_app(store, logs=..., audit=...)` returns an aiohttp Application serving:

* discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}` (plain,
  non-aggregated JSON: client-go falls back to it when the response is not an APIGroupDiscoveryList),
  `/healthz`, `/readyz`, `/livez`, and `/openapi/v3[/...]` (see `openapi.py`; `/openapi/v2` is 404);
* every resource of `resources.ALL`: get, list (label/field selectors, `limit`/`continue`), watch,
  create (`generateName`), update (PUT, optimistic concurrency on `metadata.resourceVersion`), patch
  (json-patch, merge-patch, strategic-merge-patch; server-side apply → 415), delete (cascading to
  owned objects unless `propagationPolicy=Orphan`), deletecollection, `dryRun=All`;
* subresources `status` and `scale` (autoscaling/v1 Scale), and `pods/{name}/log` through a
  `PodLogSource` (404 with a clear message when the server has none);
* server-side printing (`as=Table`, `tables.py`) and `PartialObjectMetadata[List]`;
* core/v1 and events.k8s.io/v1 Events as two views of one storage (stored in the core shape);
* the service proxy, `/api/v1/namespaces/{ns}/services/{id}/proxy/{path}` (`sim.proxy`: where a
  Service's backend is, without a pod network; audited as `services/proxy`);
* request bodies in JSON, YAML or Kubernetes protobuf (typed client-go clients, e.g. `kubectl create
  deployment`, send protobuf and never fall back); responses are always JSON.

Watch semantics follow spec 5: no resourceVersion or "0" → synthetic ADDED events then changes;
a specific one → only later changes; a compacted one → HTTP 200 and one ERROR event (410 Expired);
`allowWatchBookmarks` → a BOOKMARK every `bookmark_interval` seconds of quiet; `sendInitialEvents=true`
(with `resourceVersionMatch=NotOlderThan` and bookmarks, as the real server requires) → ADDED for
every current object then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`. Frames are
compact JSON objects, one per line, in a chunked `application/json` response. A watch whose
selector stops matching an object gets DELETED for it, and ADDED when it starts matching, as from
the real watch cache.

Authentication and authorisation: none. Any bearer token (or none) is accepted; the audit log
(`AuditRecord`s, one per resource request, with the RBAC verb) is how tests check least privilege.
Discovery and OpenAPI requests are not audited (every authenticated user may read them).

Field validation: `fieldValidation=Strict` (what kubectl sends) rejects unknown fields with the real
message; `Warn` (the default) drops them with a `Warning` header; `Ignore` drops them silently.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from sim import crds, openapi, tables
from sim.controllers.hashing import template_hash
from sim.faults import Faults
from sim.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sim.podlogs import PodLogSource
from sim.proxy import ProxyTarget, ServiceProxy, parse_proxy_path
from sim.resources import (
    ALL,
    EVENTS,
    EVENTS_V1,
    NAMESPACES,
    PODS,
    ResourceType,
)
from sim.selectors import label_selector_string, parse_field_selector, parse_label_selector
from sim.store import ApiError, Obj, Store, WatchEvent, copy_json, rfc3339
from sim.strategies import (
    FieldError,
    apply_defaults,
    drop_nulls,
    invalid,
    prepare_create,
    prepare_update,
    validate,
)

log = logging.getLogger(__name__)

SERVER_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-rollguard-sim", "gitCommit": "rollguard-sim",
                  "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
                  "compiler": "gc", "platform": "linux/amd64"}
START_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
DEFAULT_WATCH_TIMEOUT = 1800.0  # the real server's --min-request-timeout
IDLE_CHECK_SECONDS = 1.0  # how often an idle stream checks whether its client went away
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real name generator's alphabet (no vowels)
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")
PROTOBUF = "application/vnd.kubernetes.protobuf"
# What typed client-go clients send first is protobuf, and they do not fall back to JSON on a 415.
_BODY_TYPES = ("application/json", "application/yaml", PROTOBUF, "application/x-yaml", "text/yaml")
_TRUE = frozenset({"true", "1", "True", "TRUE", "yes"})
_STOP = WatchEvent("STOP", "", {"metadata": {"name": ""}}, 0)
# The cache keys (`rt.qualified`) under which objects of a storage bucket may be serialised.
_VIEWS_OF_BUCKET: dict[str, tuple[str, ...]] = {
    bucket: tuple(rt.qualified for rt in ALL if rt.bucket == bucket) for bucket in {rt.bucket for rt in ALL}}


@dataclass(frozen=True)
class AuditRecord:
    """One resource request: RBAC `verb`, `api_group` ("" = core), `resource`, `subresource`, scope and result."""

    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    # What follows is evidence for the chaos checker; equality (what the RBAC tests compare) is the above.
    user: str = dataclasses.field(default="", compare=False)
    """The bearer token the request carried: the simulator's only notion of who asked."""
    at: float = dataclasses.field(default=0.0, compare=False)
    """Wall-clock time the request arrived (epoch seconds)."""
    body: str = dataclasses.field(default="", compare=False)
    """The request body of a write (as text, at most 64 KiB), as a RequestResponse-level audit log keeps it."""
    object_revision: str = dataclasses.field(default="", compare=False)
    """For Deployments: the stored object's `deployment.kubernetes.io/revision` when the request was served."""
    object_template_hash: str = dataclasses.field(default="", compare=False)
    """For Deployments: the pod-template-hash of the stored template when the request was served (before a write)."""


@dataclass(frozen=True)
class Target:
    """What a resource URL addresses."""

    rt: ResourceType
    namespace: str
    name: str
    subresource: str


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _json_response(body: Any, status: int = 200, *, headers: Mapping[str, str] | None = None) -> web.Response:
    data = body if isinstance(body, bytes) else _dumps(body)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def _error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": "1"} if error.code in (429, 504) else None
    return _json_response(error.status(), error.code, headers=headers)


def _not_served() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _truthy(value: str | None) -> bool:
    return value is not None and value in _TRUE


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# ----- events: two API shapes over one storage -----

_V1_TO_CORE = {"regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
               "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
               "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
_CORE_TO_V1 = {core: v1 for v1, core in _V1_TO_CORE.items()}
_SHARED_EVENT_FIELDS = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "type", "related")


def event_to_core(event: Obj) -> Obj:
    """An events.k8s.io/v1 Event in the core/v1 shape (the conversion the real server does)."""
    if event.get("apiVersion") == "v1":
        return event
    out: Obj = {"kind": "Event", "apiVersion": "v1"}
    for field in _SHARED_EVENT_FIELDS:
        if field in event:
            out[field] = event[field]
    for v1_name, core_name in _V1_TO_CORE.items():
        if v1_name in event:
            out[core_name] = event[v1_name]
    out.setdefault("involvedObject", {})
    out.setdefault("source", {})
    return out


def event_to_v1(event: Obj) -> Obj:
    """A core/v1 Event in the events.k8s.io/v1 shape."""
    if event.get("apiVersion") == "events.k8s.io/v1":
        return event
    out: Obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for field in _SHARED_EVENT_FIELDS:
        if field in event:
            out[field] = event[field]
    for core_name, v1_name in _CORE_TO_V1.items():
        value = event.get(core_name)
        if value not in (None, {}, ""):
            out[v1_name] = value
    return out


def _storage_rt(rt: ResourceType) -> ResourceType:
    """The type objects are written under: events.k8s.io Events are stored as core Events."""
    return EVENTS if rt is EVENTS_V1 else rt


# ----- the server -----


class ApiServer:
    """Request handling over one Store; `app` is the aiohttp Application."""

    def __init__(self, store: Store, *, logs: PodLogSource | None, audit: list[AuditRecord] | None,
                 bookmark_interval: float, faults: Faults | None = None, proxy: ServiceProxy | None = None) -> None:
        self.store = store
        self.proxy = proxy or ServiceProxy(store)
        self.faults = faults
        if faults is not None:
            faults.attach(store, self._cut_watches)
        self.logs = logs
        self.audit = audit
        self.bookmark_interval = bookmark_interval
        # Serialised objects by (view, namespace, name) → (resourceVersion, view object, JSON bytes):
        # a list of thousands of objects re-serialises only those that changed since the last request.
        self._cache: dict[tuple[str, str, str], tuple[str, Obj, bytes]] = {}
        self._streams: set[asyncio.Queue[Any]] = set()
        self._stopping = False
        store.add_listener(self._forget_deleted)
        self._ensure_namespaces()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._on_cleanup)

    def _ensure_namespaces(self) -> None:
        for name in START_NAMESPACES:
            if self.store.peek(NAMESPACES, "", name) is None:
                namespace: Obj = {"metadata": {"name": name}}
                apply_defaults(NAMESPACES, namespace)
                prepare_create(NAMESPACES, namespace, self.store)
                self.store.create(NAMESPACES, namespace)

    async def _on_shutdown(self, app: web.Application) -> None:
        # End every open watch and log stream now, so the runner's cleanup need not wait for them.
        self._stopping = True
        for queue in list(self._streams):
            queue.put_nowait(_STOP)

    async def _on_cleanup(self, app: web.Application) -> None:
        # The Store may outlive this server (and be served again): stop listening to it.
        self.store.remove_listener(self._forget_deleted)
        await self.proxy.close()

    def _cut_watches(self) -> int:
        """End every open watch and log stream (a fault: clients must resume or re-list)."""
        streams = list(self._streams)
        for queue in streams:
            queue.put_nowait(_STOP)
        return len(streams)

    def _forget_deleted(self, event: WatchEvent) -> None:
        if event.type == "DELETED":
            for view in _VIEWS_OF_BUCKET.get(event.bucket, ()):
                self._cache.pop((view, event.namespace, event.name), None)

    # ----- dispatch -----

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["_sim", "faults"] and self.faults is not None:
            return await self.faults.handle_http(request)
        proxied = parse_proxy_path(request.rel_url.raw_path)
        if proxied is not None:
            return await self._proxy(request, proxied)
        try:
            static = self._static(parts)
            if static is not None:
                if request.method not in ("GET", "HEAD"):
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                                   "requested resource")
                return static
            target = self._target(parts)
        except ApiError as error:
            return _error_response(error)
        verb = self._verb(request, target)
        code = 500
        arrived = time.time()
        user = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        body = ""
        if verb not in ("get", "list", "watch"):
            body = (await request.read())[:65536].decode("utf-8", errors="replace")
        facts = ("", "")
        resource = f"{target.rt.plural}/{target.subresource}" if target.subresource else target.rt.plural
        try:
            if self.faults is not None:
                injected = await self.faults.before(request, verb=verb, resource=resource,
                                                    namespace=target.namespace, name=target.name, user=user)
                if injected is not None:
                    code = injected.status if verb != "watch" or injected.status != 200 else 410
                    return injected
            facts = self._deployment_facts(target)
            response = await self._dispatch(request, target, verb)
            code = response.status
            if self.faults is not None:
                self.faults.written(verb=verb, resource=target.rt.plural, user=user, code=code)
            return response
        except ApiError as error:
            code = error.code
            return _error_response(error)
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499  # the client went away; nothing to answer
            raise
        except Exception as error:  # a bug in the simulator: answer like the real server's panic handler
            log.exception("simulated API server failed on %s %s", request.method, request.path_qs)
            code = 500
            return _error_response(ApiError(500, "InternalError", f"Internal error occurred: {error!r}"))
        finally:
            if self.audit is not None:
                self.audit.append(AuditRecord(verb, target.rt.group, target.rt.plural, target.subresource,
                                              target.namespace, target.name, code, user=user, at=arrived,
                                              body=body, object_revision=facts[0], object_template_hash=facts[1]))

    async def _proxy(self, request: web.Request, target: ProxyTarget) -> web.StreamResponse:
        """The service proxy (`sim.proxy`), audited as the `services/proxy` subresource with the HTTP method's verb."""
        verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(request.method, request.method.lower())
        code = 500
        try:
            response = await self.proxy.forward(request, target)
            code = response.status
            return response
        except ApiError as error:
            code = error.code
            return _error_response(error)
        finally:
            if self.audit is not None:
                user = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                self.audit.append(AuditRecord(verb, "", "services", "proxy", target.namespace, target.service_id,
                                              code, user=user, at=time.time()))

    def _deployment_facts(self, target: Target) -> tuple[str, str]:
        """A Deployment's revision annotation and the pod-template-hash of its template, as the request finds it."""
        if target.rt.plural != "deployments" or not target.name:
            return "", ""
        stored = self.store.peek(target.rt, target.namespace, target.name)
        if stored is None:
            return "", ""
        revision = str((stored["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", ""))
        collisions = (stored.get("status") or {}).get("collisionCount")
        return revision, template_hash(stored["spec"]["template"], collisions)

    def _static(self, parts: list[str]) -> web.Response | None:
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok", content_type="text/plain")
        if parts == ["version"]:
            return _json_response(SERVER_VERSION)
        if parts == ["api"]:
            return _json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if parts == ["apis"]:
            return _json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": _api_groups(self.store)})
        if len(parts) == 2 and parts[0] == "apis":
            for group in _api_groups(self.store):
                if group["name"] == parts[1]:
                    return _json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
            raise _not_served()
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group_version = "v1" if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
            if group_version not in crds.group_versions(self.store):
                raise _not_served()
            return _json_response(_resource_list(self.store, group_version))
        if parts[:1] == ["openapi"]:
            if parts == ["openapi", "v3"]:
                return _json_response(openapi.openapi_v3_root())
            if parts[:2] == ["openapi", "v3"]:
                served = openapi.group_version_of_path("/".join(parts[2:]))
                if served is None:
                    raise _not_served()
                return _json_response(openapi.openapi_v3_document(served))
            raise _not_served()
        if not parts or parts[0] not in ("api", "apis"):
            raise _not_served()
        return None

    def _target(self, parts: list[str]) -> Target:
        if parts[0] == "api" and len(parts) >= 3 and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_served()
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = crds.find(self.store, group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = crds.find(self.store, group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise _not_served()
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in rt.subresources:
            raise _not_served()
        if rt.namespaced and name and not namespace:
            raise _not_served()
        return Target(rt, namespace, name, subresource)

    @staticmethod
    def _verb(request: web.Request, target: Target) -> str:
        method = request.method
        if method == "GET":
            if target.name:
                return "get"
            return "watch" if _truthy(request.query.get("watch")) else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if target.name else "deletecollection"}.get(method, method.lower())

    async def _dispatch(self, request: web.Request, target: Target, verb: str) -> web.StreamResponse:
        handlers: dict[str, Callable[[web.Request, Target], Awaitable[web.StreamResponse]]] = {
            "get": self._get, "list": self._list, "watch": self._watch, "create": self._create,
            "update": self._update, "patch": self._patch, "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        handler = handlers.get(verb)
        if handler is None or (verb == "create" and target.name) or (
                verb == "deletecollection" and target.rt is NAMESPACES):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if target.subresource and verb not in ("get", "update", "patch"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if target.subresource == "log" and verb != "get":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        return await handler(request, target)

    # ----- object views and serialisation -----

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        """The stored object as `rt` presents it (read-only; Events are converted between shapes)."""
        if rt.bucket != EVENTS.bucket:
            return obj
        return event_to_v1(obj) if rt is EVENTS_V1 else event_to_core(obj)

    def _encoded(self, rt: ResourceType, obj: Obj) -> bytes:
        """JSON of the stored object `obj` as `rt` presents it, cached per resourceVersion."""
        meta = obj["metadata"]
        key = (rt.qualified, str(meta.get("namespace", "")), str(meta["name"]))
        rv = str(meta.get("resourceVersion", ""))
        cached = self._cache.get(key)
        if cached is not None and cached[0] == rv:
            return cached[2]
        view = self._view(rt, obj)
        data = _dumps(view)
        self._cache[key] = (rv, view, data)
        return data

    # ----- reads -----

    def _selection(self, request: web.Request, rt: ResourceType) -> Callable[[Obj], bool] | None:
        """The predicate of `labelSelector` and `fieldSelector` over stored objects (None = everything)."""
        label_text = request.query.get("labelSelector", "")
        field_text = request.query.get("fieldSelector", "")
        checks: list[Callable[[Obj], bool]] = []
        if label_text.strip():
            labels_match = parse_label_selector(label_text)
            checks.append(lambda obj: labels_match(obj["metadata"].get("labels") or {}))
        if field_text.strip():
            fields_match = parse_field_selector(field_text, rt)
            if rt.bucket == EVENTS.bucket:
                checks.append(lambda obj: fields_match(self._view(rt, obj)))
            else:
                checks.append(fields_match)
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda obj: all(check(obj) for check in checks)

    async def _get(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        if target.subresource == "log":
            return await self._pod_log(request, target)
        obj = self.store.peek(_storage_rt(rt), target.namespace, target.name)
        if obj is None:
            raise self._not_found(rt, target.name)
        if target.subresource == "scale":
            return _json_response(_scale_of(rt, obj))
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            return _json_response(self._table(request, rt, [obj], str(self.store.resource_version)))
        if "as=PartialObjectMetadata" in accept:
            return _json_response(tables.partial_metadata(obj, api_version=_meta_version(accept)))
        return _json_response(self._encoded(rt, obj))

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found',
                        details={"name": name, "group": rt.group, "kind": rt.plural})

    def _table(self, request: web.Request, rt: ResourceType, objects: list[Obj], resource_version: str,
               continue_token: str = "") -> Obj:
        accept = request.headers.get("Accept", "")
        include = request.query.get("includeObject", "Metadata")
        if include not in ("None", "Metadata", "Object"):
            raise _bad_request(f'includeObject: Unsupported value: "{include}": supported values: "None", '
                               '"Metadata", "Object"')
        converted = [self._view(rt, obj) for obj in objects] if rt.bucket == EVENTS.bucket else objects
        return tables.table(rt.qualified if rt is not EVENTS_V1 else "events.events.k8s.io", converted,
                            now=self.store.clock.now(), resource_version=resource_version,
                            include_object=include, api_version=_meta_version(accept),
                            continue_token=continue_token,
                            convert=event_to_core if rt.bucket == EVENTS.bucket else None)

    def _check_list_rv(self, request: web.Request) -> None:
        requested = request.query.get("resourceVersion", "")
        match = request.query.get("resourceVersionMatch", "")
        if not requested or requested == "0":
            if match == "Exact":
                raise invalid_list_options("resourceVersionMatch", match,
                                           "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"")
            return
        number = _parse_rv(requested)
        current = self.store.resource_version
        if number > current:
            raise ApiError(504, "Timeout", f"Too large resource version: {number}, current: {current}",
                           details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}], "retryAfterSeconds": 1})
        if match == "Exact" and number != current:
            # Only the newest state is kept: an exact older snapshot is as gone as a compacted one.
            raise ApiError(410, "Expired", f"too old resource version: {number} ({current})")

    async def _list(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        self._check_list_rv(request)
        predicate = self._selection(request, rt)
        limit = _non_negative_int(request.query.get("limit"), "limit")
        token = request.query.get("continue", "")
        list_rv = self.store.resource_version
        start_key: tuple[str, str] | None = None
        if token:
            list_rv, start_key = self._decode_continue(token)
        # A page is read from the store's key order from the continue key on, as a real API server
        # reads it from etcd: O(page), not O(list) per page (10,000 objects are 40 pages of 250).
        objects, remaining, more = self.store.list_page(_storage_rt(rt), target.namespace or None,
                                                        after=start_key, limit=limit, predicate=predicate)
        next_token = ""
        if more:
            last = objects[-1]["metadata"]
            next_token = _encode_continue(list_rv, str(last.get("namespace", "")), str(last["name"]))
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            return _json_response(self._table(request, rt, objects, str(list_rv), next_token))
        metadata: Obj = {"resourceVersion": str(list_rv)}
        if next_token:
            metadata["continue"] = next_token
            if predicate is None:
                metadata["remainingItemCount"] = remaining
        if "as=PartialObjectMetadataList" in accept:
            version = _meta_version(accept)
            return _json_response({"kind": "PartialObjectMetadataList", "apiVersion": version, "metadata": metadata,
                                   "items": [tables.partial_metadata(o, api_version=version) for o in objects]})
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": metadata})
        body = head[:-1] + b',"items":[' + b",".join(self._encoded(rt, o) for o in objects) + b"]}"
        return _json_response(body)

    def _decode_continue(self, token: str) -> tuple[int, tuple[str, str]]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
            list_rv = int(data["rv"])
            namespace, _, name = str(data["start"]).partition("/")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                               "(version meta.k8s.io/v1)") from None
        try:
            self.store.ensure_resumable(list_rv)
        except ApiError:
            raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent list "
                           "result. You can start a new list without the continue parameter, or use the continue "
                           "token in this response to retrieve the remainder of the results. Continuing with the "
                           "provided token results in an inconsistent list - objects that were created, modified, "
                           "or deleted between the time the first chunk was returned and now may show up in the "
                           "list.") from None
        return list_rv, (namespace, name)

    # ----- watch -----

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        query = request.query
        send_initial = query.get("sendInitialEvents")
        match = query.get("resourceVersionMatch", "")
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        requested_rv = query.get("resourceVersion", "")
        if send_initial is not None:
            if match != "NotOlderThan":
                raise invalid_list_options("sendInitialEvents", send_initial,
                                           "sendInitialEvents is forbidden for watch unless resourceVersionMatch "
                                           "is set to NotOlderThan")
            if not bookmarks:
                raise invalid_list_options("allowWatchBookmarks", "false",
                                           "allowWatchBookmarks must be true when sendInitialEvents is set")
        elif match:
            raise invalid_list_options("resourceVersionMatch", match,
                                       "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                                       "provided")
        timeout = DEFAULT_WATCH_TIMEOUT
        if query.get("timeoutSeconds"):
            timeout = float(_non_negative_int(query.get("timeoutSeconds"), "timeoutSeconds") or 0)
        predicate = self._selection(request, rt)
        accept = request.headers.get("Accept", "")
        as_table = "as=Table" in accept
        initial_rv = 0
        if requested_rv and requested_rv != "0":
            initial_rv = _parse_rv(requested_rv)
            if send_initial is not None and initial_rv > self.store.resource_version:
                raise ApiError(504, "Timeout", f"Too large resource version: {initial_rv}, current: "
                               f"{self.store.resource_version}")

        # Subscribe and take the snapshot with no await in between: nothing can slip through.
        subscription = self.store.subscribe(_storage_rt(rt))
        self._streams.add(subscription.queue)
        try:
            frames: list[bytes] = []
            known: set[tuple[str, str]] | None = None
            if predicate is not None:
                known = set()
            start_rv = self.store.resource_version
            expired: ApiError | None = None
            initial_list = (_truthy(send_initial) if send_initial is not None
                            else not requested_rv or requested_rv == "0")
            if initial_list:
                objects, _ = self.store.list_objects(_storage_rt(rt), target.namespace or None, predicate)
                for obj in objects:
                    frames.append(self._frame("ADDED", rt, obj, as_table, request))
                    if known is not None:
                        known.add(_key(obj))
                if _truthy(send_initial):
                    frames.append(self._bookmark(rt, start_rv, as_table, initial_end=True))
            elif requested_rv and requested_rv != "0":
                try:
                    backlog = self.store.events_since(_storage_rt(rt), initial_rv)
                except ApiError as error:
                    expired = error
                    backlog = []
                if known is not None and predicate is not None:
                    # What the client knew at its resourceVersion is unknown here; assume it knew what
                    # matches now, so that an object leaving the selection is reported as DELETED.
                    known = {_key(o) for o in self.store.list_objects(_storage_rt(rt), target.namespace or None,
                                                                      predicate)[0]}
                for event in backlog:
                    frame = self._event_frame(event, rt, target.namespace, predicate, known, as_table, request)
                    if frame:
                        frames.append(frame)
                start_rv = max([initial_rv] + [e.resource_version for e in backlog])

            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            if expired is not None:
                await response.write(_dumps({"type": "ERROR", "object": expired.status()}) + b"\n")
                return response
            if frames:
                await response.write(b"".join(frames))
            await self._stream_events(request, response, subscription.queue, rt, target.namespace, predicate,
                                      known, as_table, start_rv=start_rv, timeout=timeout, bookmarks=bookmarks)
            return response
        except ConnectionResetError:
            return response  # the client went away mid-write: the watch simply ends
        finally:
            self._streams.discard(subscription.queue)
            subscription.close()

    async def _stream_events(self, request: web.Request, response: web.StreamResponse,
                             queue: asyncio.Queue[WatchEvent], rt: ResourceType, namespace: str,
                             predicate: Callable[[Obj], bool] | None, known: set[tuple[str, str]] | None,
                             as_table: bool, *, start_rv: int, timeout: float, bookmarks: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_sent = loop.time()
        while True:
            now = loop.time()
            if now >= deadline or self._stopping:
                return
            wait = min(deadline - now, IDLE_CHECK_SECONDS)
            if bookmarks:
                wait = min(wait, max(0.0, last_sent + self.bookmark_interval - now))
            try:
                event = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                if bookmarks and loop.time() - last_sent >= self.bookmark_interval and queue.empty():
                    await response.write(self._bookmark(rt, self.store.resource_version, as_table))
                    last_sent = loop.time()
                continue
            batch = [event]
            while not queue.empty():
                batch.append(queue.get_nowait())
            frames: list[bytes] = []
            for item in batch:
                if item is _STOP:
                    if frames:
                        await response.write(b"".join(frames))
                    return
                if item.resource_version <= start_rv:
                    continue
                frame = self._event_frame(item, rt, namespace, predicate, known, as_table, request)
                if frame:
                    frames.append(frame)
            if frames:
                await response.write(b"".join(frames))
                last_sent = loop.time()

    def _event_frame(self, event: WatchEvent, rt: ResourceType, namespace: str,
                     predicate: Callable[[Obj], bool] | None, known: set[tuple[str, str]] | None,
                     as_table: bool, request: web.Request) -> bytes | None:
        if namespace and event.namespace != namespace:
            return None
        obj = event.obj
        kind = event.type
        if predicate is not None and known is not None:
            key = _key(obj)
            matches = predicate(obj)
            if kind == "DELETED":
                if key not in known and not matches:
                    return None
                known.discard(key)
            elif matches:
                kind = "MODIFIED" if key in known else "ADDED"
                known.add(key)
            elif key in known:
                kind = "DELETED"
                known.discard(key)
            else:
                return None
        return self._frame(kind, rt, obj, as_table, request, cache=event.type != "DELETED")

    def _frame(self, kind: str, rt: ResourceType, obj: Obj, as_table: bool, request: web.Request, *,
               cache: bool = True) -> bytes:
        if as_table:
            body = _dumps(self._table(request, rt, [obj], str(obj["metadata"].get("resourceVersion", ""))))
        elif cache:
            body = self._encoded(rt, obj)
        else:
            body = _dumps(self._view(rt, obj))
        return b'{"type":"' + kind.encode() + b'","object":' + body + b"}\n"

    def _bookmark(self, rt: ResourceType, resource_version: int, as_table: bool, *, initial_end: bool = False) -> bytes:
        metadata: Obj = {"resourceVersion": str(resource_version)}
        if initial_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata}
        return _dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    # ----- writes -----

    async def _read_body(self, request: web.Request) -> Any:
        content_type = request.content_type
        if content_type not in _BODY_TYPES:
            raise ApiError(415, "UnsupportedMediaType",
                           f'the body of the request was in an unknown format - accepted media types include: '
                           f'{", ".join(_BODY_TYPES)}')
        raw = await request.read()
        if not raw:
            raise _bad_request("the request body is empty")
        try:
            if content_type == PROTOBUF:
                return openapi.decode_protobuf(raw)
            if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as error:
            raise _bad_request(f"the body of the request could not be decoded: {error}") from None

    def _decode_object(self, rt: ResourceType, body: Any, *, expected_kind: str, expected_version: str,
                       group: str) -> tuple[Obj, list[str]]:
        """Check kind/apiVersion and field types of a request object.

        Returns the object (normalised, unknown fields dropped) and the paths of the unknown fields,
        for `_field_validation` to judge.
        """
        if not isinstance(body, dict):
            raise _bad_request(f"the body of the request was in an unknown format - expected an object, got "
                               f"{type(body).__name__}")
        api_version = body.get("apiVersion")
        kind = body.get("kind")
        if api_version and api_version != expected_version:
            raise _bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                               f"version ({expected_version})")
        if kind and kind != expected_kind:
            raise _bad_request(f"the kind in the data ({kind}) does not match the expected kind ({expected_kind})")
        drop_nulls(body)
        report = openapi.check_fields(group, expected_kind, body)
        version = expected_version.rpartition("/")[2]
        if report.type_errors:
            raise openapi.decode_error(expected_kind, version, report.type_errors[0])
        return body, report.unknown

    @staticmethod
    def _field_validation(request: web.Request, kind: str, version: str, unknown: list[str]) -> list[str]:
        """Apply `fieldValidation` to unknown fields: raise for Strict, warnings for Warn (the default)."""
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise _bad_request(f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", '
                               '"Strict", "Warn"')
        if not unknown or mode == "Ignore":
            return []
        messages = [f'unknown field "{path}"' for path in unknown]
        if mode == "Strict":
            raise openapi.decode_error(kind, version, "strict decoding error: " + ", ".join(messages))
        return messages

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        for value in values:
            if value != "All":
                raise _bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return bool(values)

    def _respond_written(self, rt: ResourceType, obj: Obj, status: int, warnings: list[str]) -> web.Response:
        headers = {"Warning": ", ".join(f'299 - "{_escape_warning(w)}"' for w in warnings)} if warnings else None
        return _json_response(_dumps(self._view(rt, obj)), status, headers=headers)

    async def _create(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        body = await self._read_body(request)
        obj, unknown = self._decode_object(rt, body, expected_kind=rt.kind, expected_version=rt.api_version,
                                           group=rt.group)
        warnings = self._field_validation(request, rt.kind, rt.version, unknown)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if rt.namespaced:
            if not target.namespace:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                               "resource")
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise _bad_request("the namespace of the provided object does not match the namespace sent on the "
                                   "request")
            meta["namespace"] = target.namespace
        if not meta.get("name") and meta.get("generateName"):
            # Named before validation, as the real server's BeforeCreate does.
            meta["name"] = self._generate_name(rt, target.namespace, str(meta["generateName"]))
        storage = _storage_rt(rt)
        if rt is EVENTS_V1:
            validate(rt, obj)  # the events.k8s.io rules apply to the shape the client sent
            obj = event_to_core(obj)
        apply_defaults(storage, obj)
        prepare_create(storage, obj, self.store)
        crds.prepare_create(storage, obj)
        if rt is not EVENTS_V1:
            validate(storage, obj)
        uid = obj["metadata"].pop("uid", None)
        if self._dry_run(request):
            created = self._simulate_create(storage, obj, target.namespace, uid)
        else:
            created = self.store.create(storage, obj, namespace=target.namespace or None, uid=uid)
        return self._respond_written(rt, created, 201, warnings)

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(10):
            name = prefix + "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
            if self.store.peek(_storage_rt(rt), namespace, name) is None:
                return name
        raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{prefix}" already exists, the server was not able '
                       "to generate a unique name for the object")

    def _simulate_create(self, rt: ResourceType, obj: Obj, namespace: str, uid: str | None) -> Obj:
        """What `store.create` would store, without storing it (dryRun=All)."""
        meta = obj["metadata"]
        if rt.namespaced and self.store.peek(NAMESPACES, "", namespace) is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           details={"name": namespace, "kind": "namespaces"})
        if self.store.peek(rt, namespace, meta["name"]) is not None:
            raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{meta["name"]}" already exists',
                           details={"name": meta["name"], "group": rt.group, "kind": rt.plural})
        meta["uid"] = uid or str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.store.clock.now())
        if rt.has_generation:
            meta["generation"] = 1
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        return obj

    async def _update(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        body = await self._read_body(request)
        if target.subresource == "scale":
            return await self._write_scale(request, target, body)
        obj, unknown = self._decode_object(rt, body, expected_kind=rt.kind, expected_version=rt.api_version,
                                           group=rt.group)
        warnings = self._field_validation(request, rt.kind, rt.version, unknown)
        return self._write_update(request, target, obj, warnings)

    def _write_update(self, request: web.Request, target: Target, obj: Obj, warnings: list[str]) -> web.Response:
        """The common tail of PUT and PATCH: the written object, with `Warning`s for dropped fields."""
        return self._respond_written(target.rt, self._store_update(request, target, obj), 200, warnings)

    def _store_update(self, request: web.Request, target: Target, obj: Obj) -> Obj:
        """Strategy, validation, optimistic concurrency and storage of an update; the stored (or dry-run) result."""
        rt = target.rt
        storage = _storage_rt(rt)
        current = self.store.peek(storage, target.namespace, target.name)
        if current is None:
            raise self._not_found(rt, target.name)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", target.name) != target.name:
            raise _bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                               f"({target.name})")
        if rt.namespaced and meta.get("namespace", target.namespace) != target.namespace:
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the "
                               "request")
        expect_rv = str(meta.get("resourceVersion") or "") or None
        if expect_rv is not None and expect_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {rt.qualified} "{target.name}": the object has been '
                           "modified; please apply your changes to the latest version and try again",
                           details={"name": target.name, "group": rt.group, "kind": rt.plural})
        subresource = target.subresource or None
        if rt is EVENTS_V1:
            validate(rt, obj, event_to_v1(current))
            obj = event_to_core(obj)
        if subresource is None:
            apply_defaults(storage, obj)
        prepare_update(storage, current, obj, subresource=subresource)
        crds.prepare_update(storage, current, obj, subresource=subresource)
        if rt is not EVENTS_V1:
            validate(storage, obj, current, subresource=subresource)
        if self._dry_run(request):
            result = copy_json(obj)
            for kept in ("uid", "creationTimestamp", "resourceVersion"):
                if kept in current["metadata"]:
                    result["metadata"][kept] = current["metadata"][kept]
            result["kind"], result["apiVersion"] = storage.kind, storage.api_version
        else:
            result = self.store.replace(storage, obj, namespace=target.namespace, name=target.name,
                                        expect_rv=expect_rv)
        return result

    async def _patch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        content_type = request.content_type
        if content_type not in _PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{', '.join(_PATCH_TYPES)}")
        crds.check_patch_type(rt, content_type)
        raw = await request.read()
        try:
            patch = json.loads(raw) if raw else None
        except ValueError as error:
            raise _bad_request(f"error decoding patch: {error}") from None
        stored = self.store.peek(_storage_rt(rt), target.namespace, target.name)
        if stored is None:
            raise self._not_found(rt, target.name)
        if target.subresource == "scale":
            original = _scale_of(rt, stored)
            kind, version, group = "Scale", "autoscaling/v1", "autoscaling"
        else:
            original = copy_json(self._view(rt, stored))
            kind, version, group = rt.kind, rt.api_version, rt.group
        try:
            if content_type == "application/json-patch+json":
                patched = json_patch(original, patch)
            elif content_type == "application/merge-patch+json":
                patched = merge_patch(original, patch)
            else:
                patched = strategic_merge_patch(original, patch, kind=kind)
        except PatchError as error:
            if error.bad_request:
                raise _bad_request(error.message) from None
            raise ApiError(422, "Invalid", error.message) from None
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patched document is not an object")
        if target.subresource == "scale":
            return await self._write_scale(request, target, patched)
        # Unknown fields the stored object already had (written by a controller) are not the patch's fault.
        before = set(openapi.check_fields(group, kind, copy_json(original)).unknown)
        obj, unknown = self._decode_object(rt, patched, expected_kind=kind, expected_version=version, group=group)
        warnings = self._field_validation(request, kind, rt.version, [p for p in unknown if p not in before])
        # A resourceVersion in the patch is a precondition; otherwise the patch applies to what is stored.
        if obj.get("metadata", {}).get("resourceVersion") is None:
            obj.setdefault("metadata", {})["resourceVersion"] = stored["metadata"]["resourceVersion"]
        return self._write_update(request, target, obj, warnings)

    async def _write_scale(self, request: web.Request, target: Target, body: Any) -> web.Response:
        rt = target.rt
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format - expected a Scale object")
        scale, unknown = self._decode_object(rt, body, expected_kind="Scale", expected_version="autoscaling/v1",
                                             group="autoscaling")
        self._field_validation(request, "Scale", "v1", unknown)
        replicas = (scale.get("spec") or {}).get("replicas")
        name = target.name
        if not isinstance(replicas, int) or replicas < 0:
            error = FieldError("spec.replicas", "FieldValueInvalid",
                               f"Invalid value: {replicas}: must be greater than or equal to 0")
            scale_rt = ResourceType("autoscaling", "v1", "scale", "Scale")
            raise invalid(scale_rt, name, [error])
        stored = self.store.peek(rt, target.namespace, name)
        if stored is None:
            raise self._not_found(rt, name)
        obj = copy_json(stored)
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion") or \
            stored["metadata"]["resourceVersion"]
        result = self._store_update(request, Target(rt, target.namespace, name, ""), obj)
        return _json_response(_scale_of(rt, result))

    # ----- deletes -----

    async def _delete_options(self, request: web.Request) -> Obj:
        options: Obj = {}
        raw = await request.read()
        if raw:
            try:
                parsed = openapi.decode_protobuf(raw) if request.content_type == PROTOBUF else json.loads(raw)
            except ValueError as error:
                raise _bad_request(f"the body of the request could not be decoded: {error}") from None
            if isinstance(parsed, dict):
                options = parsed
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        policy = options.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise _bad_request(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                               '"Background", "Foreground", "Orphan"')
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        options["propagationPolicy"] = policy
        return options

    async def _delete(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        options = await self._delete_options(request)
        storage = _storage_rt(rt)
        current = self.store.peek(storage, target.namespace, target.name)
        if current is None:
            raise self._not_found(rt, target.name)
        preconditions = options.get("preconditions") or {}
        meta = current["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{target.name}": '
                           f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: "
                           f"{meta.get('uid')}", details={"name": target.name, "group": rt.group, "kind": rt.plural})
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{target.name}": '
                           f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}"
                           f", ResourceVersion in object meta: {meta.get('resourceVersion')}",
                           details={"name": target.name, "group": rt.group, "kind": rt.plural})
        if self._dry_run(request):
            last = copy_json(current)
        else:
            last = self._delete_object(storage, target.namespace, target.name, str(options["propagationPolicy"]))
        if rt is NAMESPACES:
            # The real server answers with the namespace, now Terminating; here its contents are already gone.
            last["status"] = {"phase": "Terminating"}
            last["metadata"]["deletionTimestamp"] = rfc3339(self.store.clock.now())
            return _json_response(_dumps(last))
        if rt is PODS:
            # Pods are deleted gracefully on a real server, which answers with the pod itself.
            return _json_response(_dumps(last))
        return _json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {"name": target.name, "group": rt.group, "kind": rt.plural,
                                           "uid": meta.get("uid", "")}})

    def _delete_object(self, rt: ResourceType, namespace: str, name: str, policy: str) -> Obj:
        """Delete one object now, with its namespace's contents or its dependents as `policy` says."""
        if rt is NAMESPACES:
            for other in _unique_buckets():
                if other.namespaced:
                    for obj in list(self.store.list_objects(other, name)[0]):
                        self.store.delete(other, name, str(obj["metadata"]["name"]))
        last = self.store.delete(rt, namespace, name)
        uid = last["metadata"].get("uid")
        if uid and rt is not NAMESPACES:
            self._collect_dependents(namespace, str(uid), orphan=policy == "Orphan")
        return last

    def _collect_dependents(self, namespace: str, owner_uid: str, *, orphan: bool) -> None:
        """The garbage collector's part: delete (or orphan) objects whose ownerReferences name `owner_uid`."""
        for rt in _unique_buckets():
            if not rt.namespaced or rt.bucket == EVENTS.bucket:
                continue
            for obj in list(self.store.list_objects(rt, namespace)[0]):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                name = str(obj["metadata"]["name"])
                if orphan:
                    updated = copy_json(obj)
                    remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                    if remaining:
                        updated["metadata"]["ownerReferences"] = remaining
                    else:
                        del updated["metadata"]["ownerReferences"]
                    self.store.replace(rt, updated, namespace=namespace, name=name)
                elif self.store.peek(rt, namespace, name) is not None:
                    self._delete_object(rt, namespace, name, "Background")

    async def _delete_collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        options = await self._delete_options(request)
        storage = _storage_rt(rt)
        predicate = self._selection(request, rt)
        objects, _ = self.store.list_objects(storage, target.namespace or None, predicate)
        dry_run = self._dry_run(request)
        deleted = []
        for obj in list(objects):
            meta = obj["metadata"]
            if dry_run:
                deleted.append(copy_json(obj))
            elif self.store.peek(storage, str(meta.get("namespace", "")), str(meta["name"])) is not None:
                deleted.append(self._delete_object(storage, str(meta.get("namespace", "")), str(meta["name"]),
                                                   str(options["propagationPolicy"])))
        return _json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                               "metadata": {"resourceVersion": str(self.store.resource_version)},
                               "items": [self._view(rt, o) for o in deleted]})

    # ----- pod logs -----

    async def _pod_log(self, request: web.Request, target: Target) -> web.StreamResponse:
        pod = self.store.peek(PODS, target.namespace, target.name)
        if pod is None:
            raise self._not_found(PODS, target.name)
        if self.logs is None:
            raise ApiError(404, "NotFound", f'the simulated cluster has no pod log source: logs of pod '
                           f'"{target.name}" are not available')
        query = request.query
        spec = pod.get("spec") or {}
        containers = [str(c.get("name")) for c in spec.get("containers") or []]
        all_containers = containers + [str(c.get("name")) for c in spec.get("initContainers") or []] + \
            [str(c.get("name")) for c in spec.get("ephemeralContainers") or []]
        container = query.get("container", "")
        if not container:
            if len(containers) != 1:
                raise _bad_request(f"a container name must be specified for pod {target.name}, choose one of: "
                                   f"[{' '.join(containers)}]")
            container = containers[0]
        elif container not in all_containers:
            raise _bad_request(f"container {container} is not valid for pod {target.name}")
        if "sinceSeconds" in query and "sinceTime" in query:
            raise _bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
        since_seconds: float | None = None
        if "sinceSeconds" in query:
            since_seconds = float(_non_negative_int(query["sinceSeconds"], "sinceSeconds") or 0)
            if since_seconds < 1:
                raise _bad_request(f"sinceSeconds: Invalid value: {query['sinceSeconds']}: must be greater than 0")
        since_time: float | None = None
        if "sinceTime" in query:
            try:
                since_time = openapi.parse_time(query["sinceTime"]).timestamp()
            except ValueError:
                raise _bad_request(f'sinceTime: Invalid value: "{query["sinceTime"]}": must be an RFC3339 '
                                   "timestamp") from None
        tail_lines = _non_negative_int(query.get("tailLines"), "tailLines")
        limit_bytes = _non_negative_int(query.get("limitBytes"), "limitBytes")
        if limit_bytes == 0 and "limitBytes" in query:
            raise _bad_request(f"limitBytes: Invalid value: {query['limitBytes']}: must be greater than 0")
        timestamps = _truthy(query.get("timestamps"))
        if _truthy(query.get("follow")):
            return await self._follow_log(request, target, container, since_seconds=since_seconds,
                                          since_time=since_time, tail_lines=tail_lines, timestamps=timestamps,
                                          limit_bytes=limit_bytes)
        lines = self.logs.read(target.namespace, target.name, container, since_seconds=since_seconds,
                               since_time=since_time, tail_lines=tail_lines, timestamps=timestamps)
        data = "".join(line + "\n" for line in lines).encode()
        if limit_bytes:
            data = data[:limit_bytes]
        return web.Response(body=data, content_type="text/plain")

    async def _follow_log(self, request: web.Request, target: Target, container: str, *, since_seconds: float | None,
                          since_time: float | None, tail_lines: int | None, timestamps: bool,
                          limit_bytes: int | None) -> web.StreamResponse:
        assert self.logs is not None
        source = self.logs.follow(target.namespace, target.name, container, since_seconds=since_seconds,
                                  since_time=since_time, tail_lines=tail_lines, timestamps=timestamps)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        end = object()

        async def pump() -> None:
            try:
                async for line in source:
                    await queue.put(line)
            finally:
                queue.put_nowait(end)

        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._streams.add(queue)
        pump_task = asyncio.create_task(pump(), name=f"sim-log-{target.namespace}/{target.name}/{container}")
        written = 0
        try:
            while not self._stopping:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=IDLE_CHECK_SECONDS)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    continue
                if item is end or item is _STOP:
                    break
                data = (str(item) + "\n").encode()
                if limit_bytes:
                    data = data[:max(0, limit_bytes - written)]
                if data:
                    await response.write(data)
                    written += len(data)
                if limit_bytes and written >= limit_bytes:
                    break
        finally:
            self._streams.discard(queue)
            pump_task.cancel()
            await asyncio.gather(pump_task, return_exceptions=True)
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
        return response


# ----- helpers -----


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])


def _unique_buckets() -> list[ResourceType]:
    seen: set[str] = set()
    out = []
    for rt in ALL:
        if rt.bucket not in seen:
            seen.add(rt.bucket)
            out.append(rt)
    return out


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad_request(f'resourceVersion: Invalid value: "{text}": must be a non-negative integer') from None
    if value < 0:
        raise _bad_request(f'resourceVersion: Invalid value: "{text}": must be a non-negative integer')
    return value


def _non_negative_int(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _bad_request(f'{name}: Invalid value: "{text}": must be an integer') from None
    if value < 0:
        raise _bad_request(f"{name}: Invalid value: {value}: must be greater than or equal to 0")
    return value


def invalid_list_options(field: str, value: str, detail: str) -> ApiError:
    return ApiError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {field}: Forbidden: {detail}',
                    details={"group": "meta.k8s.io", "kind": "ListOptions",
                             "causes": [{"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}",
                                         "field": field}]})


def _encode_continue(list_rv: int, namespace: str, name: str) -> str:
    raw = _dumps({"v": "meta.k8s.io/v1", "rv": list_rv, "start": f"{namespace}/{name}"})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _meta_version(accept: str) -> str:
    """meta.k8s.io/v1 unless the client only asked for v1beta1 Tables/metadata."""
    return "meta.k8s.io/v1" if "v=v1;" in accept.replace(" ", "") + ";" or "v=v1," in accept else \
        "meta.k8s.io/v1beta1"


def _escape_warning(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _scale_of(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": int(spec.get("replicas") or 0)},
        "status": {"replicas": int((obj.get("status") or {}).get("replicas") or 0),
                   "selector": label_selector_string(spec.get("selector") or {})},
    }


def _api_groups(store: Store) -> list[Obj]:
    groups: dict[str, list[str]] = {}
    for group_version in crds.group_versions(store):
        if "/" in group_version:
            group, version = group_version.split("/")
            groups.setdefault(group, []).append(version)
    return [{"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
             "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}}
            for group, versions in groups.items()]


def _resource_list(store: Store, group_version: str) -> Obj:
    resources: list[Obj] = []
    for rt in crds.group_versions(store)[group_version]:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        if rt is not NAMESPACES:
            verbs.insert(2, "deletecollection")
        entry: Obj = {"name": rt.plural, "singularName": rt.singular or rt.kind.lower(), "namespaced": rt.namespaced,
                      "kind": rt.kind, "verbs": verbs}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": ["get", "patch", "update"]}
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            elif sub == "log":
                sub_entry["verbs"] = ["get"]
            resources.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def build_app(store: Store, *, logs: PodLogSource | None = None, audit: list[AuditRecord] | None = None,
              bookmark_interval: float = 10.0, faults: Faults | None = None,
              proxy: ServiceProxy | None = None) -> web.Application:
    """The simulated API server over `store` as an aiohttp Application.

    `logs` serves `pods/{name}/log` (None → 404 with a message saying so); `audit` (if given) receives
    one `AuditRecord` per resource request; `bookmark_interval` is how many (real) seconds a watch
    that asked for bookmarks may stay silent before it gets one; `faults` (tests only) injects errors,
    latency and concurrent writes and serves `/_sim/faults` (see `sim.faults`). The namespaces `default`,
    `kube-system`, `kube-public` and `kube-node-lease` are created if missing. `proxy` serves the service
    proxy (default: one over `store` that reaches only selector-less Services; see `sim.proxy`).
    """
    return ApiServer(store, logs=logs, audit=audit, bookmark_interval=bookmark_interval, faults=faults,
                     proxy=proxy).app

