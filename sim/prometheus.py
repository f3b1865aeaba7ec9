"""A real Prometheus for the simulated cluster: its scrape targets and its process.

`PrometheusTargets` keeps a file_sd JSON file listing every Running pod as a target of the workload
server (`sim.services`), one target group per pod::

    [{"targets": ["127.0.0.1:PORT"],
      "labels": {"__metrics_path__": "/pods/staging/backend-7c5d-x2x/metrics", "job": "kubernetes-pods",
                 "instance": "staging/backend-7c5d-x2x", "namespace": "staging", "pod": "backend-7c5d-x2x",
                 "deployment": "backend", "pod_template_hash": "7c5d"}}]

so every series Prometheus stores carries `namespace`, `pod`, `deployment` and `pod_template_hash`,
as kubernetes_sd with the usual relabeling would give. All pods share one address and differ by path:
ten thousand pods are ten thousand targets but one listening socket. The file is rewritten
atomically (temp file + rename, which Prometheus' file watcher sees as one change), at most once per
`debounce` seconds of real time, and only when the target list changed.

`PrometheusServer` runs the `prometheus` binary (Debian's 2.42 is what CI installs) on 127.0.0.1 with a
generated config, a private temporary TSDB and `--web.enable-lifecycle`; `stop()` and `start()` take it
down and bring it back on the same port and data (a test of "Prometheus is down"). Prometheus samples in
real time while the workload's counters follow the cluster clock: see `sim.workload`.
Prometheus applies new targets only every 5 s (its discovery and scrape managers batch updates), so a
new pod's first sample arrives 0–10 s after it starts running.

Exceptions::

    PrometheusError
    ├── PrometheusNotInstalled   the binary is missing (names `apt-get install prometheus`)
    └── PrometheusStartError     it exited or never became ready (with the tail of its log)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import aiohttp
import yaml
from yarl import URL

from sim.resources import PODS
from sim.store import Store, WatchEvent
from sim.workload import pod_identity

__all__ = [
    "BINARY_ENV",
    "JOB_NAME",
    "PrometheusError",
    "PrometheusNotInstalled",
    "PrometheusServer",
    "PrometheusStartError",
    "PrometheusTargets",
    "find_prometheus_binary",
    "free_port",
    "target_groups",
]

BINARY_ENV = "ROLLGUARD_PROMETHEUS_BIN"
"""Environment variable naming the Prometheus binary to run instead of `prometheus` on PATH."""
JOB_NAME = "kubernetes-pods"


class PrometheusError(Exception):
    """The simulator's Prometheus could not be run."""


class PrometheusNotInstalled(PrometheusError):
    """No Prometheus binary where we looked."""


class PrometheusStartError(PrometheusError):
    """Prometheus exited, or did not become ready in time."""


def find_prometheus_binary() -> str:
    """Path of the Prometheus binary: `$ROLLGUARD_PROMETHEUS_BIN`, else `prometheus` on PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        found = shutil.which(override)
        if found is None:
            raise PrometheusNotInstalled(f"{BINARY_ENV}={override!r} is not an executable file")
        return found
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusNotInstalled(
            "the prometheus binary is not on PATH: install it (Debian/Ubuntu: `apt-get install prometheus`) "
            f"or set {BINARY_ENV} to its path")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for a server that cannot report the port it bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `15s`, otherwise milliseconds."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


# ----- targets -----

def target_groups(store: Store, address: str) -> list[dict[str, Any]]:
    """file_sd target groups for every Running pod in the store, scraped at `address` (`host:port`)."""
    groups: list[dict[str, Any]] = []
    pods, _ = store.list_objects(PODS, None, lambda p: (p.get("status") or {}).get("phase") == "Running")
    for pod in pods:
        who = pod_identity(pod)
        groups.append({
            "targets": [address],
            "labels": {
                "__metrics_path__": f"/pods/{quote(who.namespace, safe='')}/{quote(who.pod, safe='')}/metrics",
                "job": JOB_NAME,
                "instance": f"{who.namespace}/{who.pod}",
                **who.labels(),
            },
        })
    return groups


class PrometheusTargets:
    """Keeps `path` (a file_sd `.json` file) listing the store's Running pods, until `close()`.

    Writes the file once at construction, then after pod changes, batched over `debounce` real
    seconds (one write per batch of controller updates, not one per pod status patch).
    """

    def __init__(self, store: Store, workload_url: str, path: str | os.PathLike[str], *,
                 debounce: float = 0.2) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".json", ".yml", ".yaml"):
            raise ValueError(f"{self.path}: Prometheus file_sd reads only .json, .yml and .yaml files")
        url = URL(workload_url)
        if url.host is None or url.port is None:
            raise ValueError(f"workload_url {workload_url!r} must be http://host:port")
        self.address = f"{url.host}:{url.port}"
        self.debounce = debounce
        self._store = store
        self._last = ""
        self._pending: asyncio.TimerHandle | None = None
        self._closed = False
        self.flush()
        store.add_listener(self._on_event)

    def flush(self) -> None:
        """Write the file now if the target list changed."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        text = json.dumps(target_groups(self._store, self.address), indent=1, sort_keys=True) + "\n"
        if text == self._last:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        self._last = text

    def close(self) -> None:
        """Stop updating the file (it stays as last written)."""
        self._closed = True
        self._store.remove_listener(self._on_event)
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def __enter__(self) -> PrometheusTargets:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _on_event(self, event: WatchEvent) -> None:
        if self._closed or event.bucket != PODS.bucket or self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a store driven without an event loop (scripts): write at once
            self.flush()
            return
        # A timer, not a task: nothing to leak or await. An OSError while writing reaches the loop's
        # exception handler, which logs it; the next pod change tries again.
        self._pending = loop.call_later(self.debounce, self.flush)


# ----- the server -----

class PrometheusServer:
    """The real Prometheus, scraping the targets in `sd_file`, on 127.0.0.1 for the life of an `async with`.

    `scrape_interval` (seconds) defaults to Prometheus' own 15 s, for a long-running `rollguard sim`;
    tests and the demo pass 1 s so that `rate(...[15s])` has samples within seconds.
    """

    def __init__(self, sd_file: str | os.PathLike[str], *, scrape_interval: float = 15.0,
                 binary: str | None = None, port: int = 0, startup_timeout: float = 30.0,
                 stop_timeout: float = 10.0) -> None:
        if scrape_interval <= 0:
            raise ValueError(f"scrape_interval must be positive, not {scrape_interval}")
        self.sd_file = Path(sd_file).absolute()
        self.scrape_interval = scrape_interval
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self._port = port
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ----- what callers read -----

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("Prometheus has not been started")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, the same across stop() and start()."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> Path:
        """The temporary directory with `prometheus.yml`, `prometheus.log` and the TSDB (`data/`)."""
        if self._dir is None:
            raise RuntimeError("Prometheus has not been started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The generated `prometheus.yml`."""
        interval = _duration(self.scrape_interval)
        return {
            "global": {"scrape_interval": interval, "scrape_timeout": _duration(min(self.scrape_interval, 10.0)),
                       "evaluation_interval": interval},
            "scrape_configs": [{
                "job_name": JOB_NAME,
                # The file watcher sees renames at once; the refresh is the fallback.
                "file_sd_configs": [{"files": [str(self.sd_file)],
                                     "refresh_interval": _duration(min(self.scrape_interval, 5.0))}],
            }],
        }

    # ----- lifecycle -----

    async def __aenter__(self) -> PrometheusServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    async def start(self) -> None:
        """Start Prometheus (again) and wait until `/-/ready`; PrometheusError when it cannot."""
        if self.running:
            return
        binary = self._binary or find_prometheus_binary()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="rollguard-prometheus-"))
            (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        # A port picked by free_port() can be taken before Prometheus binds it; pick again then.
        attempts = 1 if self._port else 3
        for attempt in range(attempts):
            if attempts > 1:
                self._port = free_port()
            try:
                await self._start_once(binary)
                return
            except PrometheusStartError as exc:
                if attempt == attempts - 1 or "address already in use" not in str(exc):
                    raise

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout` seconds. The port and the data stay for `start()`."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if not await _exited(proc, self.stop_timeout):
                    proc.kill()
                    await _exited(proc, 10.0)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    async def wait_for_targets(self, count: int, *, timeout: float = 30.0) -> None:
        """Until at least `count` targets have been scraped successfully (health "up")."""
        deadline = asyncio.get_running_loop().time() + timeout
        up = 0
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{self.url}/api/v1/targets", params={"state": "active"},
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        body = await resp.json()
                    up = sum(1 for t in body["data"]["activeTargets"] if t.get("health") == "up")
                    if up >= count:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"Prometheus at {self.url}: {up} of {count} targets up after {timeout}s")
                await asyncio.sleep(0.2)

    # ----- internals -----

    async def _start_once(self, binary: str) -> None:
        proc = self._spawn(binary)
        self._proc = proc
        try:
            await self._wait_ready(proc)
        except BaseException:
            await self.stop()
            raise

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        """Fork Prometheus (a synchronous fork/exec of a few milliseconds, fine on the event loop)."""
        if self._log is not None:
            self._log.close()
        # A file, not a pipe: nobody reads Prometheus' output while it runs, and a full pipe would block it.
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        args = [binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self._port}",
                "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d"]
        try:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            self._log.close()
            self._log = None
            raise PrometheusStartError(f"cannot run {binary}: {exc}") from exc

    async def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if proc.poll() is not None:
                    raise PrometheusStartError(f"prometheus exited with code {proc.returncode} while starting:\n"
                                               f"{self._log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{self.url}/-/ready", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                if loop.time() > deadline:
                    raise PrometheusStartError(f"prometheus was not ready at {self.url} after "
                                               f"{self.startup_timeout}s:\n{self._log_tail()}")
                await asyncio.sleep(0.05)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `proc` exits within `timeout` seconds (polled: no child watcher, no thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True

