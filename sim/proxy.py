"""The API server's service proxy: `/api/v1/namespaces/{ns}/services/{id}/proxy/{path}`, as kube-apiserver has it.

`{id}` is `name`, `name:port` or `scheme:name:port` (scheme `http` or `https`, default `http`); `port` is a
Service port's number or its name, and empty means the Service's one unnamed port. Any verb is forwarded
(RBAC: the `services/proxy` subresource, verb `get` for GET, `create` for POST, ...) with its path below
`/proxy`, query string, headers and body; the backend's status, headers (content type included) and body
come back as they are, streamed. As on the real server, the user's `Authorization` header is not
forwarded (the API server consumed it) and hop-by-hop headers are dropped.

Where a Service's backend is: the simulator has no pod network, so it uses this convention.

* A Service **with a selector** is backed by its Ready pods, which the workload server answers for
  (`sim.services`): the request goes to `{workload_url}/pods/{ns}/{pod}/{path}`, one pod round robin.
* A Service **without a selector** stands for a process on this machine (in a real cluster: a Service with
  hand-made Endpoints), for example the daemon under test: its endpoint is `127.0.0.1:{targetPort}`
  (`targetPort` a number; it defaults to `port`). A named `targetPort` has no such endpoint.

Errors, with the real server's codes and messages (a `Status` object):

* `id` not of that shape → 400 BadRequest `invalid service request "{id}"`;
* no such Service → 404 NotFound: `services "{name}" not found` when the port is a number (the Service is
  read to find the port's name), `endpoints "{name}" not found` otherwise (only its Endpoints are read,
  and those go with the Service);
* a port number not on the Service → 503 ServiceUnavailable `no service port {n} found for service "{name}"`;
* a port name not on the Service, or no Ready pod → 503 `no endpoints available for service "{name}"`;
* the backend does not answer → 503 `error trying to reach service: dial tcp 127.0.0.1:{port}: connect:
  connection refused` (or `i/o timeout`, `EOF`).

Not simulated: WebSocket upgrades, the rewriting of links in HTML answers and of `Location` headers, and
authorisation (the simulated API server checks none; the audit log records `services/proxy` and the verb).
Injected API faults (`sim.faults`) do not apply to proxied requests.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from sim.resources import SERVICES
from sim.services import RouteError, ServiceRouter
from sim.store import ApiError, Obj, Store, not_found

__all__ = ["ProxyTarget", "ServiceProxy", "parse_proxy_path"]

_SCHEMES = ("", "http", "https")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade"})
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "authorization", "content-length"}
_NOT_RELAYED = _HOP_BY_HOP | {"content-length"}
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a backend to accept the connection (the real server's dialer waits 30)."""


@dataclass(frozen=True)
class ProxyTarget:
    """What a service proxy URL addresses: the Service, its port as written, and the backend path."""

    namespace: str
    service_id: str
    """`name`, `name:port` or `scheme:name:port`, as in the URL."""
    path: str
    """The backend path, raw (percent-encoded as sent), starting with `/`."""


def parse_proxy_path(raw_path: str) -> ProxyTarget | None:
    """The target of `/api/v1/namespaces/{ns}/services/{id}/proxy[/{path}]` (raw path), else None."""
    parts = raw_path.split("/", 8)  # "", api, v1, namespaces, ns, services, id, proxy, rest
    if len(parts) < 8 or parts[1:4] != ["api", "v1", "namespaces"] or parts[5] != "services" or parts[7] != "proxy":
        return None
    if not parts[4] or not parts[6]:
        return None
    return ProxyTarget(parts[4], parts[6], "/" + (parts[8] if len(parts) > 8 else ""))


def _split_id(service_id: str) -> tuple[str, str, str]:
    """(scheme, name, port) of `name`, `name:port` or `scheme:name:port`, like the real server's."""
    pieces = service_id.split(":")
    if len(pieces) == 1:
        scheme, name, port = "", pieces[0], ""
    elif len(pieces) == 2:
        scheme, name, port = "", pieces[0], pieces[1]
    elif len(pieces) == 3:
        scheme, name, port = pieces
    else:
        scheme, name, port = "?", "", ""
    if not name or scheme not in _SCHEMES:
        raise ApiError(400, "BadRequest", f'invalid service request "{service_id}"')
    return scheme or "http", name, port


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def _no_endpoints(name: str) -> ApiError:
    return _unavailable(f'no endpoints available for service "{name}"')


def _dial_error(host: str, port: int, exc: Exception) -> ApiError:
    """503 with the message Go's dialer would give for this failure."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        why = "connect: connection refused" if os_error.errno == errno.ECONNREFUSED else \
            f"connect: {os_error.strerror or os_error}"
    elif isinstance(exc, TimeoutError):
        why = "i/o timeout"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        return _unavailable("error trying to reach service: EOF")
    else:
        return _unavailable(f"error trying to reach service: {exc}")
    return _unavailable(f"error trying to reach service: dial tcp {host}:{port}: {why}")


class ServiceProxy:
    """Forwards service proxy requests to the Service's backend (see the module docstring for where that is)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._router = ServiceRouter(store)
        self._session: aiohttp.ClientSession | None = None
        self.workload_url: str | None = None
        """The workload server that answers as the pods (`sim.services`); None: selector Services have no
        reachable endpoints."""

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _backend(self, target: ProxyTarget) -> tuple[str, str, int]:
        """(base URL, host, port) of one endpoint of the addressed Service port; ApiError when there is none."""
        scheme, name, port = _split_id(target.service_id)
        service = self._store.peek(SERVICES, target.namespace, name)
        ports: list[Obj] = ((service or {}).get("spec") or {}).get("ports") or []
        if port.isdigit():
            if service is None:
                raise not_found(SERVICES, name)
            spec_port = next((p for p in ports if p.get("port") == int(port)), None)
            if spec_port is None:
                raise _unavailable(f'no service port {int(port)} found for service "{name}"')
        else:
            if service is None:
                raise ApiError(404, "NotFound", f'endpoints "{name}" not found',
                               details={"name": name, "kind": "endpoints"})
            spec_port = next((p for p in ports if (p.get("name") or "") == port), None)
            if spec_port is None:
                raise _no_endpoints(name)
        if (service.get("spec") or {}).get("selector"):
            if self.workload_url is None:
                raise _no_endpoints(name)
            try:
                endpoint = self._router.resolve(target.namespace, name, int(spec_port["port"]))
            except RouteError:
                raise _no_endpoints(name) from None
            pod = str(endpoint.pod["metadata"]["name"])
            workload = URL(self.workload_url)
            return (f"{self.workload_url}/pods/{target.namespace}/{pod}", workload.host or "127.0.0.1",
                    workload.port or 80)
        target_port: Any = spec_port.get("targetPort", spec_port.get("port"))
        if isinstance(target_port, str) and not target_port.isdigit():
            raise _no_endpoints(name)
        return f"{scheme}://127.0.0.1:{int(target_port)}", "127.0.0.1", int(target_port)

    async def forward(self, request: web.Request, target: ProxyTarget) -> web.StreamResponse:
        """The backend's answer to `request`, relayed; raises ApiError (404, 400, 503) as the real server answers."""
        base, host, port = self._backend(target)
        if self._session is None:
            # No decompression: the body is relayed byte for byte with its Content-Encoding.
            self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        query = request.rel_url.raw_query_string
        url = URL(base + target.path + (f"?{query}" if query else ""), encoded=True)
        body = await request.read()
        try:
            upstream = await self._session.request(request.method, url, headers=headers, data=body or None,
                                                   allow_redirects=False, ssl=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _dial_error(host, port, exc) from None
        # The real server does not check backends' certificates either (`ssl=False`), unless configured to.
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _NOT_RELAYED:
                    response.headers.add(key, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientError:
                # The backend broke off mid-answer: so does the proxy (as Go's reverse proxy aborts it).
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
