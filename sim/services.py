"""In-cluster Service routing for the simulated cluster: one aiohttp server, one port, every pod.

Rule files name in-cluster URLs (`http://backend.staging:8000/health`, `ws://backend.staging:8000/ws`).
No DNS name resolves here, so the workload server is also a plain HTTP **forward proxy** for exactly
those names. A client that sends its requests through it (`proxy="http://127.0.0.1:PORT"` in aiohttp,
curl `-x`, or `HTTP_PROXY`/`WS_PROXY` with `trust_env=True`) writes the absolute URL on the request
line (`GET http://backend.staging:8000/health HTTP/1.1`, and for WebSockets `GET ws://…` with the
Upgrade headers, which aiohttp sends the same way). The server resolves `<svc>.<ns>`,
`<svc>.<ns>.svc` or `<svc>.<ns>.svc.cluster.local` and the port to a Service in the store, picks a
Ready pod behind it round robin, and answers in-process as that pod (`sim.workload`). Origin-form
requests whose `Host` header is such a name are routed the same way (`curl --resolve`, or a client
whose resolver points the name at this port). Anything else through the proxy (e.g. `127.0.0.1`) is a 502: the
simulator forwards nothing off-cluster, so such clients must bypass it (`NO_PROXY=127.0.0.1,localhost`).

Routes for humans and for Prometheus on the same port:

- `GET /pods/{namespace}/{pod}/metrics`: the pod's metrics (what Prometheus scrapes).
- `/pods/{namespace}/{pod}/{path}`: any other path, answered by that pod directly.
- `/svc/{namespace}/{service}/{port}/{path}`: through the Service (port number or name), without a proxy.

Errors (text bodies): unknown service → 502 `no such service`, port not on the Service → 502,
no Ready pod → 503 `no ready endpoints`. Each routed answer carries `X-Sim-Pod: <pod name>`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from yarl import URL

from daemon.clock import Clock
from sim.resources import NAMESPACES, PODS, SERVICES
from sim.store import Obj, Store, WatchEvent
from sim.workload import Workloads

__all__ = [
    "POD_HEADER",
    "Endpoint",
    "RouteError",
    "ServiceRouter",
    "WorkloadServer",
    "build_workload_app",
    "parse_cluster_host",
    "sim_client_session_kwargs",
]

POD_HEADER = "X-Sim-Pod"
"""Response header naming the pod that answered a routed request."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def sim_client_session_kwargs(proxy_url: str) -> dict[str, Any]:
    """`aiohttp.ClientSession(**kwargs)` arguments that send every request through the simulator's proxy.

    Use such a session only for in-cluster URLs (smoke checks); the API server and Prometheus are on
    127.0.0.1 and must be reached directly. `proxy=` on single requests and `ws_connect` works the same way.
    """
    return {"proxy": proxy_url}


def parse_cluster_host(host: str) -> tuple[str, str, bool] | None:
    """`(service, namespace, explicit)` for an in-cluster Service host name, else None.

    Accepted: `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local` (a trailing dot is fine).
    `explicit` says the name carried the `.svc` suffix, so it cannot be an ordinary two-label host name.
    """
    labels = host.lower().rstrip(".").split(".")
    if len(labels) < 2 or labels[2:] not in ([], ["svc"], ["svc", "cluster", "local"]):
        return None
    explicit = len(labels) > 2
    if not (_DNS_LABEL.match(labels[0]) and _DNS_LABEL.match(labels[1])):
        return None
    return labels[0], labels[1], explicit


class RouteError(Exception):
    """A request the router cannot deliver: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """A Ready pod behind a Service port, as kube-proxy would pick it."""

    pod: Obj
    target_port: int


def _is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _target_port(pod: Mapping[str, Any], target: int | str) -> int | None:
    """The pod's port for a Service `targetPort` (a number, or a container port's name)."""
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and "containerPort" in port:
                return int(port["containerPort"])
    return None


class ServiceRouter:
    """Resolves (namespace, service, port) to a Ready pod, round robin, like kube-proxy.

    Ready pods per Service are cached and the cache of a namespace is dropped on any Pod or Service
    change there, so a request costs a dict lookup between changes, not a scan of every pod.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._generation: dict[str, int] = {}
        self._cache: dict[tuple[str, str, int], tuple[int, list[Endpoint]]] = {}
        self._next: dict[tuple[str, str, int], int] = {}
        store.add_listener(self._on_event)

    def resolve(self, namespace: str, service: str, port: int | str) -> Endpoint:
        """The next endpoint for `port` (number or port name) of the Service; RouteError when there is none."""
        svc = self._store.peek(SERVICES, namespace, service)
        if svc is None:
            raise RouteError(502, f"no such service: {service}.{namespace} (no Service {namespace}/{service})")
        ports = (svc.get("spec") or {}).get("ports") or []
        spec_port = next((p for p in ports if p.get("port") == port or (p.get("name") and p.get("name") == port)),
                         None)
        if spec_port is None:
            known = ", ".join(str(p.get("port")) for p in ports) or "none"
            raise RouteError(502, f"service {namespace}/{service} has no port {port} (ports: {known})")
        key = (namespace, service, int(spec_port["port"]))
        endpoints = self._endpoints(key, svc, spec_port.get("targetPort", spec_port["port"]))
        if not endpoints:
            raise RouteError(503, f"service {namespace}/{service}: no ready endpoints (no Ready pod matches "
                             "its selector)")
        turn = self._next.get(key, 0)
        self._next[key] = turn + 1
        return endpoints[turn % len(endpoints)]

    def _endpoints(self, key: tuple[str, str, int], svc: Obj, target: int | str) -> list[Endpoint]:
        """Ready pods behind one Service port, sorted by name; cached until the namespace changes."""
        namespace = key[0]
        generation = self._generation.get(namespace, 0)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        selector: Mapping[str, str] = (svc.get("spec") or {}).get("selector") or {}
        endpoints: list[Endpoint] = []
        if selector:  # a Service without a selector has only hand-made Endpoints, which the simulator lacks
            pods, _ = self._store.list_objects(PODS, namespace, lambda p: _is_ready(p) and all(
                ((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items()))
            endpoints = [Endpoint(pod, port) for pod in pods if (port := _target_port(pod, target)) is not None]
        self._cache[key] = (generation, endpoints)
        return endpoints

    def _on_event(self, event: WatchEvent) -> None:
        if event.bucket in (PODS.bucket, SERVICES.bucket):
            self._generation[event.namespace] = self._generation.get(event.namespace, 0) + 1


# ----- the server -----

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WORKLOADS = web.AppKey("workloads", Workloads)
_ROUTER = web.AppKey("router", ServiceRouter)
_STORE = web.AppKey("store", Store)
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _cluster_target(request: web.Request, store: Store) -> tuple[str, str, int] | RouteError | None:
    """(service, namespace, port) when `request` is for an in-cluster Service, a RouteError for a proxy
    request the simulator will not serve, None for the server's own routes."""
    raw = request.raw_path
    if not raw.startswith("/"):  # absolute-form: a proxy request
        try:
            url = URL(raw)
        except ValueError:
            return RouteError(400, f"bad request target {raw!r}")
        host, port = url.host or "", url.explicit_port or _DEFAULT_PORTS.get(url.scheme, 80)
        parsed = parse_cluster_host(host)
        if parsed is None:
            return RouteError(502, f"rollguard sim proxy serves only in-cluster Service hosts (<svc>.<ns>[.svc["
                              f".cluster.local]]), not {host!r}; reach other hosts directly (NO_PROXY)")
        return parsed[0], parsed[1], port
    host_header = request.headers.get("Host", "")
    try:
        url = URL(f"http://{host_header}")
    except ValueError:
        return None
    host = url.host or ""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    parsed = parse_cluster_host(host)
    # `a.b` is only taken for a Service when `b` is a namespace: the server may have a dotted host name.
    if parsed is None or not (parsed[2] or store.peek(NAMESPACES, "", parsed[1]) is not None):
        return None
    return parsed[0], parsed[1], url.explicit_port or 80


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


async def _serve_via_service(request: web.Request, namespace: str, service: str, port: int | str,
                             path: str) -> web.StreamResponse:
    try:
        endpoint = request.app[_ROUTER].resolve(namespace, service, port)
    except RouteError as exc:
        return _text(exc.status, exc.message)
    return await _serve_pod(request, endpoint.pod, path)


async def _serve_pod(request: web.Request, pod: Obj, path: str) -> web.StreamResponse:
    response = await request.app[_WORKLOADS].handle(request, pod, path)
    if not response.prepared:  # a WebSocket has already sent its headers
        response.headers[POD_HEADER] = str(pod["metadata"]["name"])
    return response


@web.middleware
async def _in_cluster_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests for `<svc>.<ns>…` hosts go to the Service, whatever their path; the rest to the routes."""
    target = _cluster_target(request, request.app[_STORE])
    if target is None:
        return await handler(request)
    if isinstance(target, RouteError):
        return _text(target.status, target.message)
    service, namespace, port = target
    return await _serve_via_service(request, namespace, service, port, request.rel_url.path)


def _pod_or_404(request: web.Request) -> Obj | web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["pod"]
    pod = request.app[_STORE].peek(PODS, namespace, name)
    if pod is None:
        return _text(404, f'pods "{name}" not found in namespace {namespace}')
    return pod


async def _pod_metrics(request: web.Request) -> web.StreamResponse:
    pod = _pod_or_404(request)
    if isinstance(pod, web.Response):
        return pod
    return await _serve_pod(request, pod, "/metrics")


async def _pod_direct(request: web.Request) -> web.StreamResponse:
    pod = _pod_or_404(request)
    if isinstance(pod, web.Response):
        return pod
    return await _serve_pod(request, pod, "/" + request.match_info["path"])


async def _service_direct(request: web.Request) -> web.StreamResponse:
    raw_port = request.match_info["port"]
    port: int | str = int(raw_port) if raw_port.isdigit() else raw_port
    return await _serve_via_service(request, request.match_info["namespace"], request.match_info["service"],
                                    port, "/" + request.match_info["path"])


async def _close_websockets(app: web.Application) -> None:
    # Open WebSockets would otherwise hold the server's shutdown for its whole grace period.
    for ws in list(app[_WORKLOADS].websockets):
        await ws.close(code=1001, message=b"server shutdown")


def build_workload_app(store: Store, clock: Clock) -> web.Application:
    """The workload server: pod metrics for Prometheus, pods and Services for humans, the in-cluster proxy."""
    app = web.Application(middlewares=[_in_cluster_hosts])
    app[_STORE] = store
    app[_WORKLOADS] = Workloads(store, clock)
    app[_ROUTER] = ServiceRouter(store)
    app.router.add_get("/pods/{namespace}/{pod}/metrics", _pod_metrics)
    app.router.add_route("*", "/pods/{namespace}/{pod}/{path:.*}", _pod_direct)
    app.router.add_route("*", "/svc/{namespace}/{service}/{port}/{path:.*}", _service_direct)
    app.on_shutdown.append(_close_websockets)
    return app


class WorkloadServer:
    """Runs `build_workload_app` on `host:port` (0: a free port) for the life of an `async with`."""

    def __init__(self, store: Store, clock: Clock, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = build_workload_app(store, clock)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the workload server is not running")
        address = self._runner.addresses[0]
        return int(address[1])

    @property
    def url(self) -> str:
        """`http://host:port`: the base of the scrape paths and the proxy URL for in-cluster hosts."""
        host = self._host if self._host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> WorkloadServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

