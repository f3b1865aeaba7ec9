"""The simulated workload behind every pod: metrics, logs, and HTTP/WebSocket answers.

Nothing here runs per pod. Every observable is *computed* from the pod object (its `Behaviour`, read
from the `SIM_*` env vars by `sim.behaviour`), its container's start time and the cluster clock,
so ten thousand pods cost nothing until somebody scrapes, reads or calls one of them.

**Metrics** (`render_metrics`), Prometheus text format 0.0.4, for a pod whose first container runs:

- `http_requests_total{method="GET",route="/api/items",code="200"|"500"}`: `N = floor(rps × elapsed)`
  requests so far, `E = floor(N × error_ratio)` of them 5xx. Both series are always present (a 0 is a
  sample; an absent series would make `5xx / all` an empty result instead of 0). Because E is exact
  at every N, `rate(5xx) / rate(all)` over any window equals `error_ratio` to within 1/requests-in-window.
- `http_request_duration_seconds{method,route}` histogram, buckets .005 … 10 (prometheus_client's
  defaults): latencies are log-normal with mean `latency_ms` and σ = 0.5 (so p95 ≈ 2 × mean, and p95
  scales linearly with `latency_ms`); bucket `le=b` holds `floor(N × CDF(b))` requests, `_sum` is
  `N × mean`. `histogram_quantile(0.95, …)` for a pod with latency_ms 180 is about 1.86 × that of a pod
  with latency_ms 100 (the buckets are coarse; the exact ratio of true p95s is 1.8).
- `process_start_time_seconds`: the container's start (counter resets follow a restart).

`elapsed` is cluster-clock time since the container's `state.running.startedAt`. Prometheus samples
in real time, so under a `ScaledClock` of speed s every rate reads s times higher, while ratios and
quantiles are unchanged; under a `FakeClock` the counters only move when the test advances the clock.
Requests accrue from the container's start whether or not the pod is Ready. The identity labels
(`namespace`, `pod`, `deployment`, `pod_template_hash`) are not in the exposition: Prometheus adds
them as target labels from file service discovery (`sim.prometheus`), as kubernetes_sd
relabeling would. `render_metrics(..., identity_labels=True)` puts them in for readers without it.

**Logs** (`WorkloadLogs`, a `PodLogSource`): line i of a container is written at
`startedAt + i / log_rate` (line 0 at the start). Line i is an error iff
`floor((i+1)·log_error_ratio) > floor(i·log_error_ratio)`, so exactly that share of lines are errors.
Every error is ONE line carrying both words, so `(?i)\\b(error|traceback)\\b` counts it once::

    2026-11-26T10:00:01.000Z INFO GET /api/items 200 12ms
    2026-11-26T10:00:02.000Z ERROR GET /api/items 500 31ms Traceback (most recent call last): \
File "/app/server.py", line 87, in list_items: RuntimeError: upstream database timeout

(one physical line; the exception class is `RuntimeError`, which `\\berror\\b` does not match on its own).
Query semantics follow the kubelet: `since_*` keeps lines stamped at or after the moment, `tail_lines`
keeps the newest n, `timestamps` prefixes the kubelet's RFC3339Nano stamp (9 fractional digits) and a
space. Like a kubelet with log rotation, only the newest `max_lines` lines are kept. A container that
has not started answers 400 `container "c" in pod "p" is waiting to start: ContainerCreating`, as
the real API server does; a terminated container's log ends at `finishedAt`.

**HTTP** (`Workloads.handle`), what a pod would answer on its port: `GET /health` → 200
`{"status":"ok"}` (503 when `healthy` is false); `GET /api/items` → 200 JSON list after `latency_ms`
real milliseconds (capped at 2 s to keep checks fast), or 500 when `api_ok` is false and for the
`error_ratio` share of requests (the same exact-share rule as the logs, over a per-pod request
counter); `GET /ws` → WebSocket answering `{"type":"PING"}` with `{"type":"PONG"}` (never, when `ws_ok`
is false); `GET /metrics` → the metrics above. Real requests do not change the computed metrics.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aiohttp import WSMsgType, web

from daemon.clock import Clock
from sim.behaviour import Behaviour, BehaviourError, behaviour_of_pod
from sim.resources import PODS
from sim.store import ApiError, Obj, Store, WatchEvent

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_SIGMA",
    "METRICS_CONTENT_TYPE",
    "PodIdentity",
    "WorkloadLogs",
    "Workloads",
    "container_started_at",
    "log_line",
    "parse_time",
    "pod_identity",
    "render_metrics",
]

LATENCY_BUCKETS: tuple[float, ...] = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Upper bounds (seconds) of `http_request_duration_seconds`, prometheus_client's defaults; +Inf is implied."""
LATENCY_SIGMA = 0.5
"""σ of the log-normal latency distribution (of ln seconds)."""
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTE = "/api/items"
MAX_REAL_LATENCY = 2.0
"""Seconds: the longest a simulated `/api/items` call really sleeps, so smoke checks stay fast."""

# Float products such as 25 × 0.12 land a hair below the integer they mean; this keeps floor() exact.
_EPS = 1e-9
_GOLDEN = 0.6180339887498949
_NORMAL = statistics.NormalDist()


# ----- pod facts -----

def parse_time(value: str) -> float:
    """Epoch seconds of a Kubernetes RFC 3339 time (`2026-11-26T10:00:00Z`, fractions and offsets allowed)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class PodIdentity:
    """Who a pod is, as Prometheus labels it."""

    namespace: str
    pod: str
    deployment: str
    """The owning Deployment ("" for a pod no Deployment owns)."""
    pod_template_hash: str

    def labels(self) -> dict[str, str]:
        return {"namespace": self.namespace, "pod": self.pod, "deployment": self.deployment,
                "pod_template_hash": self.pod_template_hash}


def pod_identity(pod: Mapping[str, Any]) -> PodIdentity:
    """Namespace, name, owning Deployment and template hash of a pod object.

    The Deployment is the owning ReplicaSet's name minus `-<pod-template-hash>` (how the Deployment
    controller names ReplicaSets); a pod without such an owner falls back to its `app.kubernetes.io/name`
    or `app` label.
    """
    meta = pod.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    template_hash = str(labels.get("pod-template-hash", ""))
    deployment = ""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            name = str(ref.get("name", ""))
            suffix = f"-{template_hash}"
            deployment = name[: -len(suffix)] if template_hash and name.endswith(suffix) else name
            break
    if not deployment:
        deployment = str(labels.get("app.kubernetes.io/name") or labels.get("app") or "")
    return PodIdentity(str(meta.get("namespace", "")), str(meta.get("name", "")), deployment, template_hash)


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    pod_status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for status in pod_status.get(key) or []:
            if status.get("name") == container:
                return status  # type: ignore[no-any-return]
    return None


def _first_container(pod: Mapping[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0].get("name", "")) if containers else ""


def container_started_at(pod: Mapping[str, Any], container: str | None = None) -> float | None:
    """Epoch seconds at which the container (default: the first) started running, or None when it is not running.

    A pod without container statuses that is `Running` with a `startTime` counts as started then,
    so a hand-made pod object needs no more than that.
    """
    name = container if container is not None else _first_container(pod)
    status = _container_status(pod, name)
    if status is not None:
        running = (status.get("state") or {}).get("running")
        if running and running.get("startedAt"):
            return parse_time(str(running["startedAt"]))
        return None
    pod_status = pod.get("status") or {}
    if not pod_status.get("containerStatuses") and pod_status.get("phase") == "Running" \
            and pod_status.get("startTime"):
        return parse_time(str(pod_status["startTime"]))
    return None


# ----- metrics -----

@lru_cache(maxsize=1024)
def _bucket_shares(latency_ms: float) -> tuple[float, ...]:
    """CDF of the latency distribution at each bucket bound (same for every pod of a version: cached)."""
    mean = latency_ms / 1000.0
    if mean <= 0:
        return tuple(1.0 for _ in LATENCY_BUCKETS)
    # Log-normal with this mean: mean = exp(mu + σ²/2).
    mu = math.log(mean) - LATENCY_SIGMA ** 2 / 2
    return tuple(0.5 * (1 + math.erf((math.log(b) - mu) / (LATENCY_SIGMA * math.sqrt(2)))) for b in LATENCY_BUCKETS)


def _share(n: int, ratio: float) -> int:
    """floor(n × ratio), exact for ratios such as 0.12 where float products fall just short."""
    return min(n, math.floor(n * ratio + _EPS))


def _label_text(labels: Mapping[str, str]) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())


def render_metrics(pod: Mapping[str, Any], now: float, *, behaviour: Behaviour | None = None,
                   identity_labels: bool = False) -> str:
    """The pod's `/metrics` page at cluster time `now` (text format 0.0.4); "" when its container is not running.

    `behaviour` saves re-parsing the pod's env when the caller has it; `identity_labels` adds
    namespace/pod/deployment/pod_template_hash to every series (Prometheus adds them itself from
    service discovery, see the module docstring).
    """
    started = container_started_at(pod)
    if started is None:
        return ""
    b = behaviour if behaviour is not None else behaviour_of_pod(pod)
    requests = math.floor(b.rps * max(0.0, now - started) + _EPS)
    errors = b.errors_after(requests) if b.error_phases else _share(requests, b.error_ratio)
    base: dict[str, str] = pod_identity(pod).labels() if identity_labels else {}
    req = {**base, "method": "GET", "route": ROUTE}
    lines = [
        "# HELP http_requests_total Requests served, by status code.",
        "# TYPE http_requests_total counter",
        f"http_requests_total{{{_label_text({**req, 'code': '200'})}}} {requests - errors}",
        f"http_requests_total{{{_label_text({**req, 'code': '500'})}}} {errors}",
        "# HELP http_request_duration_seconds Request latency in seconds.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    for bound, share in zip(LATENCY_BUCKETS, _bucket_shares(b.latency_ms), strict=True):
        le = _label_text({**req, "le": repr(bound)})  # "0.005", "1.0": as prometheus_client writes them
        lines.append(f"http_request_duration_seconds_bucket{{{le}}} {_share(requests, share)}")
    lines += [
        f"http_request_duration_seconds_bucket{{{_label_text({**req, 'le': '+Inf'})}}} {requests}",
        f"http_request_duration_seconds_sum{{{_label_text(req)}}} {requests * b.latency_ms / 1000.0!r}",
        f"http_request_duration_seconds_count{{{_label_text(req)}}} {requests}",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds{{{_label_text(base)}}} {started!r}" if base
        else f"process_start_time_seconds {started!r}",
    ]
    return "\n".join(lines) + "\n"


# ----- logs -----

@dataclass(frozen=True)
class _Run:
    """One run of a container: its start and (once terminated) its end, epoch seconds."""

    started: float
    finished: float | None


def _container_run(pod: Mapping[str, Any], container: str) -> _Run:
    """The run whose log a `pods/log` request reads: the current one, else the last terminated one."""
    name = str((pod.get("metadata") or {}).get("name", ""))
    status = _container_status(pod, container)
    if status is None:
        started = container_started_at(pod, container)
        if started is not None:
            return _Run(started, None)
        raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                       "ContainerCreating")
    state = status.get("state") or {}
    running = state.get("running")
    if running and running.get("startedAt"):
        return _Run(parse_time(str(running["startedAt"])), None)
    for ended in (state.get("terminated"), (status.get("lastState") or {}).get("terminated")):
        if ended and ended.get("startedAt") and ended.get("finishedAt"):
            return _Run(parse_time(str(ended["startedAt"])), parse_time(str(ended["finishedAt"])))
    reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
    raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')


def _app_time(epoch: float) -> str:
    """The application's own stamp: RFC 3339 UTC with milliseconds."""
    millis = round(epoch * 1000)
    return datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


def _kubelet_time(epoch: float) -> str:
    """The kubelet's `timestamps=true` prefix: RFC 3339 with exactly nine fractional digits."""
    nanos = round(epoch * 1e9)
    secs, frac = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _is_error(i: int, ratio: float) -> bool:
    return math.floor((i + 1) * ratio + _EPS) > math.floor(i * ratio + _EPS)


def _latency_sample_ms(i: int, latency_ms: float) -> int:
    """A deterministic log-normal-looking latency for line i (a low-discrepancy sequence, not random)."""
    u = min(max((i + 1) * _GOLDEN % 1.0, 1e-6), 1 - 1e-6)
    mu = -LATENCY_SIGMA ** 2 / 2
    return max(1, round(latency_ms * math.exp(mu + LATENCY_SIGMA * _NORMAL.inv_cdf(u))))


def log_line(i: int, at: float, behaviour: Behaviour, *, seed: int = 0) -> str:
    """Line i of a container's log, written at epoch `at` (without the kubelet prefix).

    `seed` shifts the latency figures so that pods of one version do not print identical logs;
    which lines are errors depends on i alone.
    """
    ms = _latency_sample_ms(i + seed, behaviour.latency_ms)
    if _is_error(i, behaviour.log_error_ratio):
        return (f"{_app_time(at)} ERROR GET {ROUTE} 500 {ms}ms Traceback (most recent call last): "
                'File "/app/server.py", line 87, in list_items: RuntimeError: upstream database timeout')
    return f"{_app_time(at)} INFO GET {ROUTE} 200 {ms}ms"


class WorkloadLogs:
    """The `PodLogSource` of the simulated cluster: log lines computed on demand from pod objects in the store."""

    FOLLOW_MIN_WAIT = 0.05
    """Cluster seconds: the shortest wait between batches while following, so fast logs come in batches."""

    def __init__(self, store: Store, clock: Clock, *, max_lines: int = 100_000) -> None:
        self._store = store
        self._clock = clock
        self.max_lines = max_lines
        """Lines kept per container run (older ones are "rotated away", as a kubelet would)."""
        self._wakers: dict[tuple[str, str], set[asyncio.Event]] = {}
        store.add_listener(self._on_event)

    def read(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
             since_time: float | None = None, tail_lines: int | None = None, timestamps: bool = False) -> list[str]:
        """Lines written so far, oldest first, filtered like `kubectl logs`; ApiError 404/400 as the API server."""
        obj, name = self._resolve(namespace, pod, container)
        run = _container_run(obj, name)
        behaviour = self._behaviour(obj)
        lo, hi = self._window(run, behaviour, since_seconds=since_seconds, since_time=since_time,
                              tail_lines=tail_lines)
        seed = zlib.crc32(pod.encode()) % 1000
        return [self._line(i, run, behaviour, timestamps, seed) for i in range(lo, hi)]

    def follow(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
               since_time: float | None = None, tail_lines: int | None = None,
               timestamps: bool = False) -> AsyncIterator[str]:
        """Like `read`, then each new line as the clock passes it, until the container stops or the pod is gone.

        Checks the pod and container at once (raising ApiError before any line), so the API server
        can answer an error status instead of an empty stream.
        """
        obj, name = self._resolve(namespace, pod, container)
        run = _container_run(obj, name)
        return self._follow(namespace, pod, name, obj, run, since_seconds=since_seconds, since_time=since_time,
                            tail_lines=tail_lines, timestamps=timestamps)

    # ----- internals -----

    def _resolve(self, namespace: str, pod: str, container: str) -> tuple[Obj, str]:
        obj = self._store.peek(PODS, namespace, pod)
        if obj is None:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found',
                           details={"name": pod, "kind": "pods"})
        spec = obj.get("spec") or {}
        names = [str(c.get("name", "")) for c in spec.get("containers") or []]
        if not container:
            if len(names) == 1:
                return obj, names[0]
            raise ApiError(400, "BadRequest", f"a container name must be specified for pod {pod}, "
                           f"choose one of: [{' '.join(names)}]")
        others = [str(c.get("name", "")) for key in ("initContainers", "ephemeralContainers")
                  for c in spec.get(key) or []]
        if container not in names and container not in others:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {pod}")
        return obj, container

    @staticmethod
    def _behaviour(obj: Obj) -> Behaviour:
        try:
            return behaviour_of_pod(obj)
        except BehaviourError as exc:
            raise ApiError(400, "BadRequest", f"simulated workload: {exc}") from exc

    def _written(self, run: _Run, behaviour: Behaviour) -> int:
        """How many lines this run has written by now."""
        until = self._clock.now() if run.finished is None else min(run.finished, self._clock.now())
        if behaviour.log_rate <= 0 or until < run.started:
            return 0
        return math.floor((until - run.started) * behaviour.log_rate + _EPS) + 1

    def _window(self, run: _Run, behaviour: Behaviour, *, since_seconds: float | None, since_time: float | None,
                tail_lines: int | None) -> tuple[int, int]:
        """The index range [lo, hi) of lines to return."""
        if since_seconds is not None and since_time is not None:
            raise ApiError(400, "BadRequest", "at most one of sinceTime or sinceSeconds may be specified")
        if tail_lines is not None and tail_lines < 0:
            raise ApiError(400, "BadRequest", f"tailLines: Invalid value: {tail_lines}: must be greater than or "
                           "equal to 0")
        hi = self._written(run, behaviour)
        lo = max(0, hi - self.max_lines)
        since = since_time if since_seconds is None else self._clock.now() - since_seconds
        if since is not None and behaviour.log_rate > 0:
            lo = max(lo, math.ceil((since - run.started) * behaviour.log_rate - _EPS))
        if tail_lines is not None:
            lo = max(lo, hi - tail_lines)
        return min(lo, hi), hi

    @staticmethod
    def _line(i: int, run: _Run, behaviour: Behaviour, timestamps: bool, seed: int) -> str:
        at = run.started + i / behaviour.log_rate
        line = log_line(i, at, behaviour, seed=seed)
        return f"{_kubelet_time(at)} {line}" if timestamps else line

    async def _follow(self, namespace: str, pod: str, container: str, obj: Obj, run: _Run, *,
                      since_seconds: float | None, since_time: float | None, tail_lines: int | None,
                      timestamps: bool) -> AsyncIterator[str]:
        uid = obj["metadata"].get("uid")
        behaviour = self._behaviour(obj)
        next_i, _ = self._window(run, behaviour, since_seconds=since_seconds, since_time=since_time,
                                 tail_lines=tail_lines)
        key = (namespace, pod)
        seed = zlib.crc32(pod.encode()) % 1000
        changed = asyncio.Event()
        self._wakers.setdefault(key, set()).add(changed)
        try:
            while True:
                changed.clear()
                current = self._store.peek(PODS, namespace, pod)
                if current is None or current["metadata"].get("uid") != uid:
                    return  # deleted (or replaced by a namesake): the stream ends, as kubectl's does
                try:
                    now_run = _container_run(current, container)
                except ApiError:
                    return
                if now_run.started != run.started:
                    return  # the container we followed ended and a new one started
                run = now_run
                written = self._written(run, behaviour)
                for i in range(max(next_i, written - self.max_lines), written):
                    yield self._line(i, run, behaviour, timestamps, seed)
                next_i = max(next_i, written)
                if run.finished is not None:
                    return
                if self._written(run, behaviour) > next_i:
                    continue  # time passed while the reader held the last line: more are due already
                due: float | None = None
                if behaviour.log_rate > 0:
                    due = max(run.started + next_i / behaviour.log_rate, self._clock.now() + self.FOLLOW_MIN_WAIT)
                await self._wait(due, changed)
        finally:
            wakers = self._wakers.get(key)
            if wakers is not None:
                wakers.discard(changed)
                if not wakers:
                    del self._wakers[key]

    async def _wait(self, due: float | None, changed: asyncio.Event) -> None:
        """Until cluster time `due` (forever when None) or the pod changes."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(changed.wait(), name="sim-log-follow-change")]
        if due is not None:
            waits.append(asyncio.create_task(self._sleep_until(due), name="sim-log-follow-sleep"))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _sleep_until(self, due: float) -> None:
        # The delay is computed when this task first runs, not when it was created: a FakeClock may
        # have advanced in between, and a delay fixed earlier would then overshoot.
        await self._clock.sleep(max(0.0, due - self._clock.now()))

    def _on_event(self, event: WatchEvent) -> None:
        if event.bucket != PODS.bucket:
            return
        for waker in self._wakers.get((event.namespace, event.name), ()):
            waker.set()


# ----- HTTP and WebSocket -----

class Workloads:
    """Answers HTTP and WebSocket requests as a given pod would, and renders its metrics.

    Keeps per-pod state that must persist between requests (the request counter that decides which
    `/api/items` calls fail, parsed behaviours), keyed by pod uid and dropped when the pod is deleted.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: dict[str, int] = {}
        self.websockets: set[web.WebSocketResponse] = set()
        """Open WebSocket connections (closed by the server on shutdown)."""
        store.add_listener(self._on_event)

    def behaviour(self, pod: Obj) -> Behaviour:
        """The pod's behaviour (BehaviourError on bad SIM_* values), parsed once per pod."""
        uid = str(pod["metadata"].get("uid", ""))
        cached = self._behaviours.get(uid)
        if cached is None:
            cached = behaviour_of_pod(pod)
            if uid:
                self._behaviours[uid] = cached
        return cached

    def metrics(self, pod: Obj) -> str:
        """The pod's metrics page now; "" when its container is not running."""
        return render_metrics(pod, self._clock.now(), behaviour=self.behaviour(pod))

    async def handle(self, request: web.Request, pod: Obj, path: str) -> web.StreamResponse:
        """Serve `request` for `path` (e.g. "/health") as `pod`'s container would."""
        name = str(pod["metadata"]["name"])
        try:
            behaviour = self.behaviour(pod)
        except BehaviourError as exc:
            return web.Response(status=500, text=f"simulated workload of pod {name}: {exc}\n")
        if container_started_at(pod) is None:
            return web.Response(status=503, text=f"pod {name}: container is not running\n")
        if path == "/ws":
            return await self._websocket(request, behaviour)
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"})
        if path == "/health":
            if behaviour.healthy:
                return web.json_response({"status": "ok"})
            return web.json_response({"status": "unhealthy"}, status=503)
        if path == ROUTE:
            return await self._items(pod, behaviour)
        if path == "/metrics":
            return web.Response(body=self.metrics(pod).encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})
        return web.Response(status=404, text="404 page not found\n")

    async def _items(self, pod: Obj, behaviour: Behaviour) -> web.Response:
        uid = str(pod["metadata"].get("uid", ""))
        n = self._requests.get(uid, 0)
        self._requests[uid] = n + 1
        # Real milliseconds, not cluster time: a check's timeout is real time too.
        await asyncio.sleep(min(behaviour.latency_ms / 1000.0, MAX_REAL_LATENCY))
        if not behaviour.api_ok or _is_error(n, behaviour.error_ratio):
            return web.json_response({"error": "internal server error"}, status=500)
        return web.json_response([{"id": i, "name": f"item-{i}"} for i in range(1, 4)])

    async def _websocket(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade\n")
        await ws.prepare(request)
        self.websockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or not behaviour.ws_ok:
                    continue  # a broken pod reads and never answers: the client's check times out
                reply = _ws_reply(msg.data)
                if reply is not None:
                    await ws.send_str(reply)
        finally:
            self.websockets.discard(ws)
        return ws

    def _on_event(self, event: WatchEvent) -> None:
        if event.type == "DELETED" and event.bucket == PODS.bucket:
            uid = str(event.obj["metadata"].get("uid", ""))
            self._behaviours.pop(uid, None)
            self._requests.pop(uid, None)


def _ws_reply(text: str) -> str | None:
    """The answer to one WebSocket text message: PONG for a PING (JSON or bare), an error for anything else."""
    if text.strip().upper() == "PING":
        return "PONG"
    try:
        message = json.loads(text)
    except ValueError:
        return json.dumps({"type": "ERROR", "message": "expected JSON"})
    if isinstance(message, dict) and message.get("type") == "PING":
        return json.dumps({"type": "PONG"})
    return json.dumps({"type": "ERROR", "message": "unknown message type"})
