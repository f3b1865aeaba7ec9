"""What every scenario needs: the machine's description, percentiles, process accounting, the daemon as a child.

The daemon runs as a separate process (`rollguard run`, JSON logs to a file) so that its RSS and CPU
are its own: `ProcStats` reads `/proc/<pid>/status` (VmRSS, VmHWM) and `/proc/<pid>/stat` (utime + stime).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import structlog
import yaml

from daemon.logs import configure_logging
from daemon.settings import LogSettings
from sim.resources import DEPLOYMENTS, NAMESPACES, ResourceType
from sim.store import Store
from sim.strategies import apply_defaults, prepare_create

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
ROLLGUARD = Path(sys.executable).with_name("rollguard")


# ----- figures -----

def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0–100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], *, digits: int = 3) -> dict[str, Any]:
    """n, p50, p95, max and mean of `values`, rounded."""
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {"n": len(values), "p50": r(percentile(values, 50)), "p95": r(percentile(values, 95)),
            "max": r(max(values) if values else None), "mean": r(sum(values) / len(values) if values else None)}


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, Python and kernel: what RESULTS.md must name."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    prometheus = shutil.which("prometheus") or ""
    prom_version = ""
    if prometheus:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([prometheus, "--version"], capture_output=True, text=True, timeout=10)
            prom_version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    kubectl = shutil.which("kubectl") or ""
    kubectl_version = ""
    if kubectl:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True,
                                 timeout=10)
            kubectl_version = json.loads(out.stdout)["clientVersion"]["gitVersion"]
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "kernel": platform.release(), "prometheus": prom_version,
            "kubectl": kubectl_version}


# ----- process accounting -----

@dataclass(frozen=True)
class ProcSample:
    at: float
    """time.monotonic() of the reading."""
    cpu_seconds: float
    """utime + stime of the process so far."""
    rss_mib: float
    hwm_mib: float
    """VmHWM: the peak RSS so far."""


def proc_sample(pid: int) -> ProcSample:
    """One reading of a live process' CPU time and memory."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" that ends comm: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    utime, stime = int(fields[11]), int(fields[12])
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return ProcSample(time.monotonic(), (utime + stime) / CLK_TCK, rss / 1024, hwm / 1024)


def cpu_share(before: ProcSample, after: ProcSample) -> float:
    """CPU seconds per wall second between two readings: 1.0 = one core busy."""
    wall = after.at - before.at
    return (after.cpu_seconds - before.cpu_seconds) / wall if wall > 0 else 0.0


@contextlib.contextmanager
def logging_to(stream: TextIO, *, fmt: str = "json", level: str = "info") -> Iterator[None]:
    """structlog and stdlib logging (the simulator's, an in-process daemon's) to `stream` inside the block;
    both configurations are restored after it."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(LogSettings(format=fmt, level=level), stream=stream)
    try:
        yield
    finally:
        structlog.configure(**saved_structlog)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


# ----- HTTP helpers -----

async def wait_http_ok(session: aiohttp.ClientSession, url: str, *, timeout: float, interval: float = 0.05,
                       alive: Callable[[], bool] = lambda: True) -> float:
    """Poll `url` until it answers 200; returns time.monotonic() of that answer."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise RuntimeError(f"the process serving {url} exited")
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:g}s")
        await asyncio.sleep(interval)


async def prometheus_query_requests(session: aiohttp.ClientSession, prometheus_url: str) -> float:
    """Prometheus' own count of instant queries served (`prometheus_http_requests_total{handler="/api/v1/query"}`)."""
    async with session.get(f"{prometheus_url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ----- the simulated cluster, filled without HTTP -----

def ensure_namespace(store: Store, name: str) -> None:
    if store.peek(NAMESPACES, "", name) is None:
        obj: dict[str, Any] = {"metadata": {"name": name}}
        apply_defaults(NAMESPACES, obj)
        prepare_create(NAMESPACES, obj, store)
        store.create(NAMESPACES, obj)


def bench_deployment(name: str, namespace: str, *, image: str = "bench:v1", replicas: int = 0,
                     labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A small Deployment as an SRE would apply it (a plain web container, no SIM_* knobs)."""
    labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": dict(labels)},
                         "spec": {"containers": [{"name": "web", "image": image,
                                                  "ports": [{"name": "http", "containerPort": 8000}]}]}},
        },
    }


def create_object(store: Store, rt: ResourceType, obj: dict[str, Any]) -> None:
    """Create an object directly in the store, defaulted and prepared as the API server's create path does.

    (Validation and HTTP are skipped: ten thousand POSTs would measure the simulator, not rollguard.)
    """
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    if rt.namespaced:
        ensure_namespace(store, namespace)
    apply_defaults(rt, obj)
    prepare_create(rt, obj, store)
    store.create(rt, obj)


def create_deployments(store: Store, namespace: str, names: Iterable[str], **kwargs: Any) -> int:
    """`create_object` of a `bench_deployment` per name; returns how many."""
    count = 0
    for name in names:
        create_object(store, DEPLOYMENTS, bench_deployment(name, namespace, **kwargs))
        count += 1
    return count


async def wait_settled(store: Store, *, namespaces: Sequence[str], expected: int, timeout: float,
                       predicate: Callable[[Mapping[str, Any]], bool] | None = None) -> float:
    """Wait until `expected` Deployments in `namespaces` are fully rolled out (and satisfy `predicate`).

    Returns the seconds waited. A rollout counts as done as `kubectl rollout status` has it (`rolled_out`).
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        done = 0
        for namespace in namespaces:
            objects, _ = store.list_objects(DEPLOYMENTS, namespace)
            done += sum(1 for d in objects if rolled_out(d) and (predicate is None or predicate(d)))
        if done >= expected:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}/{expected} Deployments rolled out after {timeout:g}s")
        await asyncio.sleep(0.2)


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """`kubectl rollout status` says "successfully rolled out"."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 1)):
        return False
    want = int(spec.get("replicas", 1))
    return (int(status.get("updatedReplicas", 0)) == want and int(status.get("availableReplicas", 0)) == want
            and int(status.get("replicas", 0)) == want)


# ----- the daemon as a child process -----

def write_rules(directory: Path, policies: Sequence[Mapping[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for policy in policies:
        (directory / f"{policy['metadata']['name']}.yaml").write_text(yaml.safe_dump(dict(policy), sort_keys=False))
    return directory


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DaemonProcess:
    """`rollguard run` in a child process; logs (JSON lines) go to `log_path`."""

    proc: asyncio.subprocess.Process
    url: str
    log_path: Path
    spawned_at: float
    """time.monotonic() just before the process was spawned."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are skipped)."""
        lines: list[dict[str, Any]] = []
        with self.log_path.open() as handle:
            for raw in handle:
                if raw.startswith("{"):
                    with contextlib.suppress(ValueError):
                        lines.append(json.loads(raw))
        return lines


@contextlib.asynccontextmanager
async def running_daemon(*, workdir: Path, rules_dir: Path, kubeconfig: Path, prometheus_url: str | None = None,
                         namespaces: Sequence[str] = (), name: str = "daemon",
                         log_level: str = "info", env: Mapping[str, str] | None = None) -> AsyncIterator[DaemonProcess]:
    """Start `rollguard run` as a child (`env`: ROLLGUARD_* settings added); SIGTERM it (then SIGKILL after
    10 s) on exit."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    args = [str(ROLLGUARD), "run", "--rules", str(rules_dir), "--kubeconfig", str(kubeconfig),
            "--http-listen", f"127.0.0.1:{port}", "--log-format", "json", "--log-level", log_level]
    if prometheus_url:
        args += ["--prometheus-url", prometheus_url]
    for namespace in namespaces:
        args += ["--namespace", namespace]
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "PYTHONUNBUFFERED": "1",
                 **(env or {})}
    with log_path.open("wb") as log_file:
        spawned = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                                                    stderr=log_file, env=child_env)
    daemon = DaemonProcess(proc, f"http://127.0.0.1:{port}", log_path, spawned)
    try:
        yield daemon
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
