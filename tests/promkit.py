"""Test kit for the simulated workload, Service routing and the real Prometheus.

Pod and Service objects are written straight into a `Store`, shaped as the simulated controllers
write them (a "running, ready" pod of a Deployment), so these tests need no controller. `prometheus_stack`
runs the workload server, the file_sd targets and a real Prometheus together, for any test that wants
PromQL over simulated pods.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from daemon.clock import Clock
from sim.prometheus import PrometheusServer, PrometheusTargets
from sim.resources import NAMESPACES, PODS, SERVICES
from sim.services import WorkloadServer
from sim.store import Obj, Store, rfc3339

T = TypeVar("T")


def ensure_namespace(store: Store, name: str) -> None:
    if store.peek(NAMESPACES, "", name) is None:
        store.create(NAMESPACES, {"metadata": {"name": name}})


def pod_object(namespace: str, name: str, *, deployment: str = "backend", template_hash: str = "5d8f7c9b4",
               env: Mapping[str, str] | None = None, started: float | None = None, ready: bool = True,
               containers: tuple[str, ...] = ("app",), image: str = "example.com/backend:1.0") -> Obj:
    """A pod of `deployment` as the ReplicaSet controller makes it: Running since `started` (None: Pending)."""
    env_list = [{"name": k, "value": v} for k, v in (env or {}).items()]
    pod: Obj = {
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app": deployment, "pod-template-hash": template_hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{deployment}-{template_hash}",
                                 "uid": f"uid-rs-{deployment}-{template_hash}", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {"containers": [{"name": c, "image": image, "env": env_list,
                                 "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]}
                                for c in containers]},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    if started is not None:
        stamp = rfc3339(started)
        pod["status"] = {
            "phase": "Running",
            "startTime": stamp,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": c, "ready": ready, "restartCount": 0, "image": image,
                                   "state": {"running": {"startedAt": stamp}}} for c in containers],
        }
    return pod


def make_pod(store: Store, namespace: str, name: str, **kwargs: Any) -> Obj:
    """Create a pod (see `pod_object`; `started` defaults to the store clock's now, truncated to the second)."""
    ensure_namespace(store, namespace)
    kwargs.setdefault("started", math.floor(store.clock.now()))
    return store.create(PODS, pod_object(namespace, name, **kwargs))


def make_service(store: Store, namespace: str, name: str, *, selector: Mapping[str, str] | None = None,
                 port: int = 8000, target_port: int | str = 8000, port_name: str = "http") -> Obj:
    """A ClusterIP Service; the selector defaults to `app: <name>`."""
    ensure_namespace(store, namespace)
    return store.create(SERVICES, {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": dict(selector or {"app": name}),
                 "ports": [{"name": port_name, "port": port, "targetPort": target_port, "protocol": "TCP"}]},
    })


def set_ready(store: Store, namespace: str, name: str, ready: bool) -> None:
    pod = store.get(PODS, namespace, name)
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    store.replace(PODS, pod, namespace=namespace, name=name)


async def poll(check: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = 0.25,
               what: str = "condition") -> T:
    """Call `check` until it returns something other than None; TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)


async def instant_query(session: aiohttp.ClientSession, prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """`/api/v1/query` result vector; AssertionError when Prometheus answers an error."""
    async with session.get(f"{prometheus_url}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body.get("status") == "success", f"query {promql!r} failed: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@dataclass
class PrometheusStack:
    """A workload server and a real Prometheus scraping every Running pod of `store`."""

    workload: WorkloadServer
    targets: PrometheusTargets
    prometheus: PrometheusServer


@asynccontextmanager
async def prometheus_stack(store: Store, clock: Clock, tmp_path: Path, *,
                           scrape_interval: float = 1.0) -> AsyncIterator[PrometheusStack]:
    async with WorkloadServer(store, clock) as workload:
        with PrometheusTargets(store, workload.url, tmp_path / "targets.json", debounce=0.05) as targets:
            async with PrometheusServer(targets.path, scrape_interval=scrape_interval) as prometheus:
                yield PrometheusStack(workload, targets, prometheus)
