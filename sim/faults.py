"""Fault injection for the simulated API server: test-only, off unless a `Faults` is passed to `build_app`.

What can be asked for (from Python, or over HTTP with `POST /_sim/faults` and a JSON body):

* `rules`: answer matching requests with an error (500, 409, 429 + Retry-After, 410 — on a watch a
  410 is the real server's HTTP 200 with one ERROR event), add latency before serving them, or stall
  them until the faults are cleared. A rule matches on RBAC verb, resource (`deployments`,
  `deployments/scale`), object name and user (the bearer token: the simulator knows no other identity),
  `*` for any; it applies to its next `count` matches.
* `beforePatch`: the concurrent writer — "before serving the next JSON patch to deployments/NAME,
  apply this other write first" (an annotation merge-patch, a scale, a status update), so the patch's
  `test` of the resourceVersion it read fails exactly as it would against a busy cluster.
* `write`: one such write now; `cutWatches`: end every open watch; `compact`: drop the watch history,
  so resumes get 410 Expired and clients must re-list.
* Python only: `after_write` triggers — call a function once a user's Nth write has been applied,
  before it is answered (how the chaos tests SIGKILL the daemon at each write point of a rollback).

`GET /_sim/faults` answers what was injected so far, by kind; `DELETE /_sim/faults` clears every rule
and releases stalled requests.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sim.resources import DEPLOYMENTS
from sim.store import ApiError, Obj, Store, copy_json
from sim.strategies import prepare_update

ERROR_CODES = {409: "Conflict", 410: "Expired", 429: "TooManyRequests", 500: "InternalError",
               503: "ServiceUnavailable"}
WRITE_KINDS = ("annotate", "scale", "status", "deploy")


class FaultSpecError(ValueError):
    """A fault schedule that cannot be applied; the message names the field."""


@dataclass
class FaultRule:
    """Answer the next `count` matching requests with `code` (0: serve normally) after `latency` seconds."""

    verb: str = "*"
    resource: str = "*"
    """Plural, or plural/subresource (`deployments/scale`); `*` for any."""
    name: str = "*"
    user: str = "*"
    """The bearer token; a trailing `*` matches any token with that prefix (`rollguard-*`)."""
    code: int = 500
    retry_after: float | None = None
    """Seconds, sent as the Retry-After header (with 429)."""
    latency: float = 0.0
    """Seconds to wait before answering (the error, or the normal response when `code` is 0)."""
    stall: bool = False
    """Never answer until the faults are cleared."""
    count: int = 1

    def matches(self, *, verb: str, resource: str, name: str, user: str) -> bool:
        user_matches = user.startswith(self.user[:-1]) if self.user.endswith("*") else self.user == user
        return (self.count > 0 and self.verb in ("*", verb) and self.resource in ("*", resource)
                and self.name in ("*", name) and user_matches)

    @property
    def kind(self) -> str:
        if self.stall:
            return "stall"
        if self.code:
            return f"error-{self.code}"
        return "latency"


@dataclass(frozen=True)
class ConcurrentWrite:
    """A write by "someone else" to a Deployment: `annotate` (merge-patch of one annotation), `scale`,
    `status`, or `deploy` (a newer deploy: the first container's image becomes `value`)."""

    kind: str
    namespace: str
    name: str
    key: str = "chaos.rollguard.io/touched"
    value: str = "1"
    replicas: int | None = None
    env: Mapping[str, str] | None = None
    """For `deploy`: the first container's new environment (None keeps it)."""


@dataclass
class AfterWrite:
    """Call `action` once `user`'s `index`-th write (1-based; leases, watches and reads not counted) is applied."""

    user: str
    index: int
    action: Callable[[], None]
    fired: bool = False


@dataclass
class Faults:
    """The active fault schedule of one simulated API server, and what it injected so far."""

    store: Store | None = None
    rules: list[FaultRule] = field(default_factory=list)
    before_patch: list[ConcurrentWrite] = field(default_factory=list)
    after_write: list[AfterWrite] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    writes_by_user: Counter[str] = field(default_factory=Counter)
    _cut: Callable[[], int] | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    # ----- wiring (done by the API server) -----

    def attach(self, store: Store, cut_watches: Callable[[], int]) -> None:
        self.store = store
        self._cut = cut_watches

    # ----- Python control -----

    def add(self, rule: FaultRule) -> None:
        self._released.clear()
        self.rules.append(rule)

    def release_stalls(self) -> None:
        """Answer every stalled request now (the stall rules stay, for requests still to come)."""
        self._released.set()

    def clear(self) -> None:
        """Drop every rule and trigger and release stalled requests (the counters stay)."""
        self.rules.clear()
        self.before_patch.clear()
        self.after_write.clear()
        self._released.set()

    def cut_watches(self) -> int:
        """End every open watch now; returns how many were open."""
        cut = self._cut() if self._cut is not None else 0
        self.injected["cut-watches"] += 1
        return cut

    def compact(self) -> None:
        """Forget the watch history: every resume from an older resourceVersion gets 410 Expired."""
        assert self.store is not None, "not attached to an API server"
        self.store.compact()
        self.injected["compact"] += 1

    def write(self, write: ConcurrentWrite) -> Obj:
        """Apply a concurrent write to a Deployment now; returns the stored object."""
        assert self.store is not None, "not attached to an API server"
        old = self.store.get(DEPLOYMENTS, write.namespace, write.name)
        obj = copy_json(old)
        if write.kind == "deploy":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container["image"] = write.value
            if write.env is not None:
                container["env"] = [{"name": k, "value": v} for k, v in sorted(write.env.items())]
        elif write.kind == "annotate":
            obj["metadata"].setdefault("annotations", {})[write.key] = write.value
        elif write.kind == "scale":
            obj["spec"]["replicas"] = write.replicas if write.replicas is not None else obj["spec"].get("replicas", 1)
        elif write.kind == "status":
            obj.setdefault("status", {})["observedGeneration"] = obj["metadata"].get("generation", 1)
        else:
            raise FaultSpecError(f"write.kind: {write.kind!r} is not one of {', '.join(WRITE_KINDS)}")
        self.injected[f"concurrent-{write.kind}"] += 1
        prepare_update(DEPLOYMENTS, old, obj, subresource="status" if write.kind == "status" else None)
        return self.store.replace(DEPLOYMENTS, obj, namespace=write.namespace, name=write.name)

    # ----- the API server's hooks -----

    async def before(self, request: web.Request, *, verb: str, resource: str, namespace: str,
                     name: str, user: str) -> web.StreamResponse | None:
        """Called before a resource request is served; a response returned here is the answer."""
        if verb == "patch" and resource == "deployments" and request.content_type == "application/json-patch+json":
            for pending in list(self.before_patch):
                if pending.namespace == namespace and pending.name == name:
                    self.before_patch.remove(pending)
                    self.write(pending)
        rule = next((r for r in self.rules if r.matches(verb=verb, resource=resource, name=name, user=user)), None)
        if rule is None:
            return None
        rule.count -= 1
        self.injected[rule.kind] += 1
        if rule.latency:
            await asyncio.sleep(rule.latency)
        if rule.stall:
            await self._released.wait()
            return None
        if not rule.code:
            return None
        reason = ERROR_CODES.get(rule.code, "InternalError")
        error = ApiError(rule.code, reason, f"injected fault: {reason}")
        if verb == "watch" and rule.code == 410:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
            return response
        headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
        return web.json_response(error.status(), status=rule.code, headers=headers)

    def written(self, *, verb: str, resource: str, user: str, code: int) -> None:
        """Called once a write was answered `code` (not yet sent): fires the `after_write` triggers."""
        if verb in ("get", "list", "watch") or resource == "leases" or code >= 400:
            return
        self.writes_by_user[user] += 1
        count = self.writes_by_user[user]
        for trigger in self.after_write:
            if not trigger.fired and trigger.user == user and trigger.index == count:
                trigger.fired = True
                self.injected["kill-at-write"] += 1
                trigger.action()

    # ----- HTTP control -----

    async def handle_http(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"injected": dict(self.injected), "rules": len(self.rules)})
        if request.method == "DELETE":
            self.clear()
            return web.json_response({"cleared": True})
        if request.method != "POST":
            return web.json_response({"error": "use GET, POST or DELETE"}, status=405)
        try:
            self.apply_spec(await request.json())
        except (FaultSpecError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        return web.json_response({"injected": dict(self.injected), "rules": len(self.rules)})

    def apply_spec(self, spec: Any) -> None:
        """Apply a JSON schedule (see the module docstring); FaultSpecError names a bad field."""
        if not isinstance(spec, Mapping):
            raise FaultSpecError("the body must be a JSON object")
        unknown = set(spec) - {"rules", "beforePatch", "write", "cutWatches", "compact"}
        if unknown:
            raise FaultSpecError(f"unknown fields: {', '.join(sorted(unknown))}")
        for i, raw in enumerate(spec.get("rules") or []):
            self.add(rule_from_json(raw, f"rules[{i}]"))
        for i, raw in enumerate(spec.get("beforePatch") or []):
            self.before_patch.append(write_from_json(raw, f"beforePatch[{i}]"))
        if spec.get("write"):
            self.write(write_from_json(spec["write"], "write"))
        if spec.get("cutWatches"):
            self.cut_watches()
        if spec.get("compact"):
            self.compact()


_RULE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "verb": str, "resource": str, "name": str, "user": str, "code": int, "retryAfter": (int, float),
    "latency": (int, float), "stall": bool, "count": int}


def rule_from_json(raw: Any, where: str) -> FaultRule:
    if not isinstance(raw, Mapping):
        raise FaultSpecError(f"{where}: must be an object")
    for key, value in raw.items():
        expected = _RULE_FIELDS.get(key)
        if expected is None:
            raise FaultSpecError(f"{where}.{key}: unknown field (known: {', '.join(_RULE_FIELDS)})")
        if not isinstance(value, expected):
            raise FaultSpecError(f"{where}.{key}: {value!r} has the wrong type")
    code = int(raw.get("code", 500))
    if code and code not in ERROR_CODES:
        raise FaultSpecError(f"{where}.code: {code} is not one of 0, {', '.join(map(str, ERROR_CODES))}")
    return FaultRule(verb=raw.get("verb", "*"), resource=raw.get("resource", "*"), name=raw.get("name", "*"),
                     user=raw.get("user", "*"), code=code, retry_after=raw.get("retryAfter"),
                     latency=float(raw.get("latency", 0.0)), stall=bool(raw.get("stall", False)),
                     count=int(raw.get("count", 1)))


def write_from_json(raw: Any, where: str) -> ConcurrentWrite:
    if not isinstance(raw, Mapping):
        raise FaultSpecError(f"{where}: must be an object")
    kind = raw.get("kind")
    if kind not in WRITE_KINDS:
        raise FaultSpecError(f"{where}.kind: {kind!r} is not one of {', '.join(WRITE_KINDS)}")
    if not isinstance(raw.get("name"), str) or not isinstance(raw.get("namespace"), str):
        raise FaultSpecError(f"{where}: namespace and name are required strings")
    replicas = raw.get("replicas")
    return ConcurrentWrite(kind=str(kind), namespace=raw["namespace"], name=raw["name"],
                           key=str(raw.get("key", "chaos.rollguard.io/touched")), value=str(raw.get("value", "1")),
                           replicas=int(replicas) if replicas is not None else None,
                           env={str(k): str(v) for k, v in raw["env"].items()} if isinstance(raw.get("env"), Mapping)
                           else None)
