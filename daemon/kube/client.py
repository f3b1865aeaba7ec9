"""A small JSON client for the Kubernetes API on top of kubernetes_asyncio.

kubernetes_asyncio provides what is hard to get right: kubeconfig and in-cluster configuration,
credentials (tokens, exec plugins, client certificates), TLS and a pooled aiohttp session. Its
generated models are slow to build and snake_case; rollguard works on the API's own JSON
(camelCase dicts) instead, which is what the rollout-state functions, the annotations and the
simulated cluster all speak. So every call here goes through `ApiClient.call_api(...,
_preload_content=False)` and decodes JSON itself.

Exceptions:

    KubeError                  any failure talking to the API server
     ├── KubeApiError          the server answered with a Status (has .code, .reason, .message)
     │    └── ResourceExpired  410: a watch or continue token is too old — re-list
     └── KubeUnavailable       connection refused, reset or timed out — retry with backoff
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient


def _lazy_package(name: str, directory: str) -> types.ModuleType:
    """A stand-in for package `name` whose `__init__` runs only when a name it defines is first asked for."""
    module = types.ModuleType(name)
    module.__path__ = [directory]
    module.__package__ = name

    def load_rest(attribute: str) -> Any:
        if (Path(directory) / f"{attribute}.py").is_file() or (Path(directory) / attribute).is_dir():
            return importlib.import_module(f"{name}.{attribute}")  # a submodule: no need for the rest
        # The real `__init__`, run once into this module: everything it defines appears here.
        if not module.__dict__.get("_rollguard_loaded"):
            module.__dict__["_rollguard_loaded"] = True
            init = Path(directory) / "__init__.py"
            exec(compile(init.read_text(), str(init), "exec"), module.__dict__)  # the package's own __init__, unchanged
            if attribute in module.__dict__:
                return module.__dict__[attribute]
        try:
            return importlib.import_module(f"{name}.{attribute}")
        except ImportError:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

    module.__getattr__ = load_rest  # type: ignore[method-assign]
    return module


def _import_light() -> tuple[Any, Any]:
    """`kubernetes_asyncio.client` and `.config` without the ~40 MiB of generated models and API classes.

    rollguard uses only the configuration loaders, `Configuration` and `ApiClient.call_api`; the
    packages' `__init__` files import every generated model (~2,000 modules). The packages are put in
    `sys.modules` as lazy stand-ins (their `__init__` runs on first use of anything else, so other
    code importing kubernetes_asyncio still gets everything), and `ApiClient` is imported while an
    empty `models` module stands in (it only reads models to deserialise, which `_preload_content=False`
    never does). When kubernetes_asyncio was already imported in full, that is used as is.
    """
    if "kubernetes_asyncio.client" not in sys.modules:
        spec = importlib.util.find_spec("kubernetes_asyncio")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("kubernetes_asyncio is not installed")
        root = next(iter(spec.submodule_search_locations))
        top = sys.modules.setdefault("kubernetes_asyncio", _lazy_package("kubernetes_asyncio", root))
        client_pkg = _lazy_package("kubernetes_asyncio.client", str(Path(root) / "client"))
        sys.modules["kubernetes_asyncio.client"] = client_pkg
        top.__dict__["client"] = client_pkg
        models = types.ModuleType("kubernetes_asyncio.client.models")
        sys.modules["kubernetes_asyncio.client.models"] = models
        try:
            configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
            api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
        finally:
            # The real models package loads on first use (e.g. by the simulator's OpenAPI document).
            del sys.modules["kubernetes_asyncio.client.models"]
            client_pkg.__dict__.pop("models", None)
        client_pkg.__dict__["Configuration"] = configuration.Configuration
        client_pkg.__dict__["ApiClient"] = api_client.ApiClient
    return sys.modules["kubernetes_asyncio.client"], importlib.import_module("kubernetes_asyncio.config")


k8s_client, k8s_config = _import_light()

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A failure talking to the Kubernetes API server."""


class KubeApiError(KubeError):
    """The API server answered with an error `Status`."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class ResourceExpired(KubeApiError):
    """410 Gone/Expired: the resourceVersion is older than the server keeps; re-list."""


class KubeUnavailable(KubeError):
    """The API server could not be reached (refused, reset, timed out)."""


def _api_error(code: int, body: bytes | str) -> KubeApiError:
    reason, message = "", body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(body)
        if isinstance(status, dict):
            reason = str(status.get("reason", ""))
            message = str(status.get("message", message))
            code = int(status.get("code", code))
    except ValueError:
        pass
    cls = ResourceExpired if code == 410 else KubeApiError
    return cls(code, reason, message[:500])


def api_path(group_version: str, plural: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
    """`/apis/apps/v1/namespaces/ns/deployments/name/status` and friends (`v1` → `/api/v1`)."""
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    parts = [prefix]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class KubeClient:
    """JSON in, JSON out; one pooled session for the daemon's lifetime."""

    def __init__(self, api: ApiClient, *, timeout: float = 30.0) -> None:
        self._api = api
        self._timeout = timeout

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None, *, context: str | None = None) -> KubeClient:
        """From a kubeconfig file, or the in-cluster service account when `kubeconfig` is None."""
        configuration = k8s_client.Configuration()
        if kubeconfig is None:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(config_file=str(kubeconfig), context=context,
                                              client_configuration=configuration)
        return cls(k8s_client.ApiClient(configuration=configuration))

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       body: Any = None, content_type: str = "application/json",
                       timeout: float | None = None, accept: str = "application/json") -> aiohttp.ClientResponse:
        query = [(k, _query_value(v)) for k, v in (params or {}).items() if v is not None]
        headers = {"Accept": accept, "Content-Type": content_type}
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path, method, query_params=query, header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=timeout if timeout is not None else self._timeout)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise KubeUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status >= 300:
            try:
                body_bytes = await response.read()
            finally:
                response.release()
            raise _api_error(response.status, body_bytes)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Obj:
        response = await self._request(method, path, **kwargs)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.release()
        decoded: Obj = json.loads(data) if data else {}
        return decoded

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Obj:
        return await self._json("GET", path, params=params)

    async def list(self, path: str, params: Mapping[str, Any] | None = None, *, page_size: int = 500) -> Obj:
        """A whole list, following `continue` tokens; the list RV is the first page's."""
        query = dict(params or {})
        query["limit"] = page_size
        first = await self._json("GET", path, params=query)
        items: list[Obj] = list(first.get("items") or [])
        token = (first.get("metadata") or {}).get("continue")
        while token:
            query["continue"] = token
            page = await self._json("GET", path, params=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
        first["items"] = items
        first.setdefault("metadata", {}).pop("continue", None)
        return first

    async def create(self, path: str, body: Obj) -> Obj:
        return await self._json("POST", path, body=body)

    async def replace(self, path: str, body: Obj) -> Obj:
        return await self._json("PUT", path, body=body)

    async def patch(self, path: str, body: Obj | Sequence[Obj], *, content_type: str = MERGE_PATCH,
                    dry_run: bool = False) -> Obj:
        return await self._json("PATCH", path, body=body, content_type=content_type,
                                params={"dryRun": "All"} if dry_run else None)

    async def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Obj:
        return await self._json("DELETE", path, params=params)

    async def watch(self, path: str, params: Mapping[str, Any] | None = None, *,
                    timeout_seconds: int = 300) -> AsyncIterator[Obj]:
        """Watch events (`{"type": ..., "object": ...}`) until the server closes the stream.

        An ERROR event raises `KubeApiError` (`ResourceExpired` for 410). Connection loss raises
        `KubeUnavailable`. The caller resumes from the last seen resourceVersion.
        """
        query = dict(params or {})
        query.update({"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds})
        response = await self._request("GET", path, params=query, timeout=timeout_seconds + 30)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise KubeUnavailable(f"watch {path}: {type(exc).__name__}: {exc}") from exc
                if not line:
                    return
                if not line.strip():
                    continue
                event: Obj = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise _api_error(int(status.get("code", 500)), json.dumps(status))
                yield event
        finally:
            response.release()

    async def stream_lines(self, path: str, params: Mapping[str, Any] | None = None,
                           *, timeout: float | None = None) -> AsyncIterator[str]:
        """Text lines of a streaming response (pod logs with follow=true)."""
        response = await self._request("GET", path, params=params, accept="*/*", timeout=timeout)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise KubeUnavailable(f"stream {path}: {type(exc).__name__}: {exc}") from exc
                if not line:
                    return
                yield line.decode(errors="replace").rstrip("\n")
        finally:
            response.release()

    async def stream_chunks(self, path: str, params: Mapping[str, Any] | None = None,
                            *, timeout: float | None = None, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """Raw bytes of a response, at most `chunk_size` at a time (no line-length limit, unlike `stream_lines`)."""
        response = await self._request("GET", path, params=params, accept="*/*", timeout=timeout)
        try:
            while True:
                try:
                    chunk = await response.content.read(chunk_size)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise KubeUnavailable(f"stream {path}: {type(exc).__name__}: {exc}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            response.release()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
