"""The simulated kubelet (and scheduler): the lifecycle of every pod, driven by its `Behaviour`.

A pod's status is a pure function of when the kubelet first saw it (`t0`), its behaviour (read from the
template's `SIM_*` env vars and image tag by `sim.behaviour`) and the clock; `sync` writes that
status when it differs from the stored one and asks to be called again at the next transition.

Long-running pods (`restartPolicy: Always`, the default)::

    t0                 Pending: PodScheduled, containers waiting ContainerCreating
    t0 + min(0.5, d)   Running: containers running (startedAt), Ready/ContainersReady False
    t0 + d             Ready/ContainersReady True          (d = ready_delay; never if `ready` is false)

A crash-looping pod (`crash`) runs 1 s, exits 1 and is restarted with the kubelet's back-off: at once the
first time, then after 10 s, 20 s, 40 s … at most 5 min, waiting in `CrashLoopBackOff` meanwhile, with
`restartCount` counting restarts and `lastState.terminated` the previous run (Error, exit 1). Its phase
stays Running and it is never Ready.

Job pods (`restartPolicy: Never` or `OnFailure`) run `run_seconds` and end Succeeded (exit 0, reason
Completed) or Failed (the exit code, reason Error); `OnFailure` restarts a failing container in place,
with the same back-off, as the real kubelet does.

A pod whose `SIM_*` values cannot be parsed does not stop the controller: a long-running pod stays
Pending with its containers waiting in `CreateContainerConfigError` (as a pod with a bad config
reference does; failing it instead would make its ReplicaSet replace it in a hot loop), a Job pod ends
Failed. Both carry the `BehaviourError` text in `status.message` and the container's waiting message.

The kubelet also plays the scheduler: it binds pods without `spec.nodeName` and records the
`Scheduled` event (from `default-scheduler`) for every new pod.

A pod with a `deletionTimestamp` is removed from the store once its containers have stopped: one
simulated second after the kubelet saw the deletion (at most the grace period), at once for a pod
that already ended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from daemon.clock import Clock
from sim.behaviour import Behaviour, BehaviourError, behaviour_of_pod
from sim.controllers.events import NORMAL, WARNING, EventRecorder
from sim.resources import PODS
from sim.store import ApiError, Obj, Store, rfc3339

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CONTAINER_START_SECONDS",
    "CRASH_RUN_SECONDS",
    "NODE_IP",
    "NODE_NAME",
    "SHUTDOWN_SECONDS",
    "Kubelet",
    "crash_backoff",
    "parse_time",
    "pod_is_active",
    "pod_is_available",
    "pod_is_ready",
    "pod_is_terminating",
    "pod_ready_since",
    "qos_class",
]

NODE_NAME = "sim-node-1"
NODE_IP = "10.0.0.10"
CONTAINER_START_SECONDS = 0.5
"""Simulated seconds from scheduling to a running container (image present, sandbox quick)."""
CRASH_RUN_SECONDS = 1.0
"""How long a crash-looping container runs before it exits 1."""
SHUTDOWN_SECONDS = 1.0
"""How long a deleted pod's containers take to stop after SIGTERM (capped by the grace period)."""
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0

Schedule = Callable[[str, str, float], None]
"""`schedule(namespace, name, delay_seconds)`: sync this pod again after a delay of clock time."""


# ----- pod facts (shared with the ReplicaSet and Job controllers) -----

def parse_time(value: str) -> float:
    """Epoch seconds of a Kubernetes RFC 3339 time (`2026-11-26T10:00:00Z`, fractions allowed)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's `Ready` condition is True."""
    cond = _condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def pod_ready_since(pod: Mapping[str, Any]) -> float | None:
    """Epoch seconds since which the pod has been Ready, or None when it is not Ready."""
    cond = _condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    stamp = cond.get("lastTransitionTime")
    return parse_time(str(stamp)) if stamp else None


def pod_is_available(pod: Mapping[str, Any], min_ready_seconds: int, now: float) -> bool:
    """Ready for at least `min_ready_seconds` (what ReplicaSet `availableReplicas` counts)."""
    if not pod_is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = pod_ready_since(pod)
    return since is not None and since + min_ready_seconds <= now


def pod_is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_is_active(pod: Mapping[str, Any]) -> bool:
    """Not being deleted and not ended (Succeeded/Failed): what controllers count as a replica."""
    phase = (pod.get("status") or {}).get("phase")
    return not pod_is_terminating(pod) and phase not in ("Succeeded", "Failed")


def qos_class(spec: Mapping[str, Any]) -> str:
    """The pod's QoS class from its containers' resources (Guaranteed, Burstable or BestEffort)."""
    containers: Sequence[Mapping[str, Any]] = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    any_set = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for resource in ("cpu", "memory"):
            limit = limits.get(resource)
            if limit is None or requests.get(resource, limit) != limit:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def crash_backoff(crashes_before: int) -> float:
    """Seconds the kubelet waits before restarting a container that has crashed `crashes_before + 1` times."""
    if crashes_before <= 0:
        return 0.0
    return min(BACKOFF_INITIAL * 2.0 ** (crashes_before - 1), BACKOFF_MAX)


def go_duration(seconds: float) -> str:
    """A whole number of seconds as Go prints a Duration: `10s`, `1m20s`, `5m0s`."""
    total = round(seconds)
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


# ----- the lifecycle -----

@dataclass
class _Run:
    """What the kubelet remembers about one pod (by uid)."""

    uid: str
    scheduled_at: float
    pod_ip: str = ""
    terminating_since: float | None = None
    containers_started: int = 0
    """Container runs already announced with Created/Started events."""
    backoffs_reported: set[int] = field(default_factory=set)
    announced_scheduling: bool = False


@dataclass(frozen=True)
class _Plan:
    """How a pod's containers run: each run lasts `run_length` (None: forever) and exits `exit_code`."""

    run_length: float | None
    exit_code: int
    restarts: bool


@dataclass
class _State:
    """The containers' state at one moment, derived from the plan."""

    phase: str
    started_at: float | None = None
    """Start of the current run (running), or of the last run (terminated)."""
    finished_at: float | None = None
    waiting_reason: str = ""
    waiting_message: str = ""
    restart_count: int = 0
    last_terminated: Obj | None = None
    terminated: Obj | None = None
    ready_at: float | None = None
    next_change: float | None = None
    runs_started: int = 0


def _plan(pod: Mapping[str, Any], behaviour: Behaviour) -> _Plan:
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if policy == "Always":
        if behaviour.crash:
            return _Plan(CRASH_RUN_SECONDS, 1, restarts=True)
        return _Plan(None, 0, restarts=False)
    exit_code = behaviour.exit_code or (1 if behaviour.crash else 0)
    length = CRASH_RUN_SECONDS if behaviour.crash else behaviour.run_seconds
    return _Plan(length, exit_code, restarts=policy == "OnFailure" and exit_code != 0)


def _terminated(exit_code: int, started: float, finished: float, container_id: str) -> Obj:
    return {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": rfc3339(started), "finishedAt": rfc3339(finished), "containerID": container_id}


def _container_id(uid: str, run: int) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{run}".encode()).hexdigest()


def _walk(plan: _Plan, behaviour: Behaviour, t0: float, now: float, uid: str) -> _State:
    """The containers' state at `now` for a pod scheduled at `t0`."""
    start_at = t0 + min(CONTAINER_START_SECONDS, behaviour.ready_delay)
    if now < start_at:
        return _State("Pending", waiting_reason="ContainerCreating", next_change=start_at)
    run_start = start_at
    crashes = 0
    last: Obj | None = None
    while True:
        end = None if plan.run_length is None else run_start + plan.run_length
        if end is None or now < end:
            state = _State("Running", started_at=run_start, restart_count=crashes, last_terminated=last,
                           next_change=end, runs_started=crashes + 1)
            ready_at = max(t0 + behaviour.ready_delay, run_start)
            if behaviour.ready and not plan.restarts:
                if now >= ready_at:
                    state.ready_at = ready_at
                elif end is None or ready_at < end:
                    state.next_change = ready_at
            return state
        terminated = _terminated(plan.exit_code, run_start, end, _container_id(uid, crashes))
        if not plan.restarts:
            return _State("Succeeded" if plan.exit_code == 0 else "Failed", started_at=run_start,
                          finished_at=end, restart_count=crashes, last_terminated=last, terminated=terminated,
                          runs_started=crashes + 1)
        delay = crash_backoff(crashes)
        restart_at = end + delay
        if now < restart_at:
            return _State("Running", waiting_reason="CrashLoopBackOff", restart_count=crashes,
                          waiting_message=f"back-off {go_duration(delay)} restarting failed container",
                          last_terminated=terminated, next_change=restart_at, runs_started=crashes + 1)
        last = terminated
        crashes += 1
        run_start = restart_at


class Kubelet:
    """Runs every pod bound to its node: status, readiness, crashes, job completion and deletion."""

    def __init__(self, store: Store, clock: Clock, *, schedule: Schedule, node_name: str = NODE_NAME,
                 node_ip: str = NODE_IP) -> None:
        self.store = store
        self.clock = clock
        self.node_name = node_name
        self.node_ip = node_ip
        self._schedule = schedule
        self._events = EventRecorder(store, clock, "kubelet", host=node_name)
        self._scheduler_events = EventRecorder(store, clock, "default-scheduler")
        self._runs: dict[tuple[str, str], _Run] = {}
        self._next_ip = 0

    def sync(self, namespace: str, name: str) -> None:
        """Bring one pod's status up to date; delete it once its containers stopped after a deletion."""
        pod = self.store.peek(PODS, namespace, name)
        key = (namespace, name)
        if pod is None:
            self._runs.pop(key, None)
            return
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if node and node != self.node_name:
            return
        now = self.clock.now()
        run = self._runs.get(key)
        if run is None or run.uid != meta.get("uid"):
            run = self._runs[key] = _Run(str(meta.get("uid", "")), self._first_seen(pod, now))
        if pod_is_terminating(pod):
            self._terminate(pod, run, now)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if not node:
            pod = self._bind(pod)
        if _condition(pod, "PodScheduled") is None and not run.announced_scheduling:
            # Pods arrive bound (the controllers set nodeName) or are bound above; either way this is
            # where the scheduler would have said so.
            run.announced_scheduling = True
            self._scheduler_events.event(
                pod, NORMAL, "Scheduled", f"Successfully assigned {namespace}/{name} to {self.node_name}")
        status, next_change = self._status(pod, run, now)
        if status != pod.get("status"):
            updated = dict(pod)
            updated["status"] = status
            self.store.replace(PODS, updated, namespace=namespace, name=name,
                               expect_rv=pod["metadata"]["resourceVersion"])
        if next_change is not None:
            self._schedule(namespace, name, max(0.0, next_change - now))

    # ----- steps -----

    def _first_seen(self, pod: Mapping[str, Any], now: float) -> float:
        # A pod that already ran (the kubelet restarted over an existing store) keeps its timeline.
        start = (pod.get("status") or {}).get("startTime")
        return parse_time(str(start)) if start else now

    def _bind(self, pod: Obj) -> Obj:
        """Assign an unscheduled pod to this node (the scheduler's job, here the kubelet's)."""
        bound = dict(pod)
        bound["spec"] = {**(pod.get("spec") or {}), "nodeName": self.node_name}
        return self.store.replace(PODS, bound, namespace=pod["metadata"]["namespace"],
                                  name=pod["metadata"]["name"], expect_rv=pod["metadata"]["resourceVersion"])

    def _terminate(self, pod: Mapping[str, Any], run: _Run, now: float) -> None:
        meta = pod["metadata"]
        ended = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if run.terminating_since is None:
            run.terminating_since = now
            if not ended:
                for container in (pod.get("spec") or {}).get("containers") or ():
                    self._events.event(pod, NORMAL, "Killing", f"Stopping container {container.get('name', '')}")
        grace = meta.get("deletionGracePeriodSeconds")
        shutdown = 0.0 if ended else min(SHUTDOWN_SECONDS, float(grace if grace is not None else 30))
        remaining = run.terminating_since + shutdown - now
        if remaining > 0:
            self._schedule(meta["namespace"], meta["name"], remaining)
            return
        try:
            self.store.delete(PODS, meta["namespace"], meta["name"])
        except ApiError as err:
            if err.code != 404:
                raise
        self._runs.pop((meta["namespace"], meta["name"]), None)

    def _allocate_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"10.244.{(n // 250) % 256}.{n % 250 + 2}"

    # ----- status -----

    def _status(self, pod: Mapping[str, Any], run: _Run, now: float) -> tuple[Obj, float | None]:
        """The pod status at `now` and when it next changes."""
        spec = pod.get("spec") or {}
        containers = [c for c in spec.get("containers") or () if isinstance(c, Mapping)]
        names = [str(c.get("name", "")) for c in containers]
        t0 = run.scheduled_at
        previous = pod.get("status") or {}
        status: Obj = {"phase": "Pending"}
        try:
            behaviour = behaviour_of_pod(pod)
        except BehaviourError as err:
            return self._config_error(pod, status, names, containers, t0, str(err)), None

        state = _walk(_plan(pod, behaviour), behaviour, t0, now, run.uid)
        self._announce(pod, run, state, names, containers)
        ready = state.ready_at is not None
        status["phase"] = state.phase
        ended = state.phase in ("Succeeded", "Failed")
        started = state.phase != "Pending"
        end_stamp = rfc3339(state.finished_at) if state.finished_at is not None else ""
        if ended:
            reason = "PodCompleted" if state.phase == "Succeeded" else "PodFailed"
            conditions = [
                _cond("PodReadyToStartContainers", "False", end_stamp),
                _cond("Initialized", "True", rfc3339(t0), reason="PodCompleted"),
                _cond("Ready", "False", end_stamp, reason=reason),
                _cond("ContainersReady", "False", end_stamp, reason=reason),
                _cond("PodScheduled", "True", rfc3339(t0)),
            ]
        else:
            unready = f"containers with unready status: [{' '.join(names)}]"
            start_stamp = rfc3339(t0 + min(CONTAINER_START_SECONDS, behaviour.ready_delay))
            ready_cond = (_cond("Ready", "True", rfc3339(state.ready_at)) if state.ready_at is not None
                          else _cond("Ready", "False", rfc3339(t0), reason="ContainersNotReady", message=unready))
            conditions = [
                _cond("PodReadyToStartContainers", "True" if started else "False",
                      start_stamp if started else rfc3339(t0)),
                _cond("Initialized", "True", rfc3339(t0)),
                ready_cond,
                {**ready_cond, "type": "ContainersReady"},
                _cond("PodScheduled", "True", rfc3339(t0)),
            ]
        status["conditions"] = conditions
        status["hostIP"] = self.node_ip
        status["hostIPs"] = [{"ip": self.node_ip}]
        if started:
            if not run.pod_ip:
                run.pod_ip = previous.get("podIP") or self._allocate_ip()
            status["podIP"] = run.pod_ip
            status["podIPs"] = [{"ip": run.pod_ip}]
        status["startTime"] = rfc3339(t0)
        meta = pod["metadata"]
        pod_ref = f"{meta.get('name', '')}_{meta.get('namespace', '')}({run.uid})"
        status["containerStatuses"] = [
            self._container_status(container, state, run.uid, pod_ref, ready=ready) for container in containers]
        status["qosClass"] = previous.get("qosClass") or qos_class(spec)
        return status, state.next_change

    def _container_status(self, container: Mapping[str, Any], state: _State, uid: str, pod_ref: str, *,
                          ready: bool) -> Obj:
        image = str(container.get("image", ""))
        out: Obj = {"name": str(container.get("name", "")), "state": {}, "lastState": {}, "ready": ready,
                    "restartCount": state.restart_count, "image": image, "imageID": "", "started": False}
        if state.phase == "Pending":
            out["state"] = {"waiting": {"reason": state.waiting_reason}}
            return out
        out["imageID"] = _image_id(image)
        out["containerID"] = _container_id(uid, state.restart_count)
        if state.terminated is not None:
            out["state"] = {"terminated": state.terminated}
        elif state.waiting_reason:
            name = out["name"]
            out["state"] = {"waiting": {"reason": state.waiting_reason,
                                        "message": f"{state.waiting_message}={name} pod={pod_ref}"}}
        else:
            assert state.started_at is not None
            out["state"] = {"running": {"startedAt": rfc3339(state.started_at)}}
            out["started"] = True
        if state.last_terminated is not None:
            out["lastState"] = {"terminated": state.last_terminated}
        return out

    def _config_error(self, pod: Mapping[str, Any], status: Obj, names: list[str],
                      containers: Sequence[Mapping[str, Any]], t0: float, error: str) -> Obj:
        message = f"invalid simulated behaviour: {error}"
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        stamp = rfc3339(t0)
        if policy == "Always":
            unready = f"containers with unready status: [{' '.join(names)}]"
            status["phase"] = "Pending"
            ready = _cond("Ready", "False", stamp, reason="ContainersNotReady", message=unready)
            waiting: Obj = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        else:
            status["phase"] = "Failed"
            ready = _cond("Ready", "False", stamp, reason="PodFailed")
            waiting = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message,
                                      "startedAt": stamp, "finishedAt": stamp}}
        status["message"] = message
        status["conditions"] = [
            _cond("PodReadyToStartContainers", "True", stamp),
            _cond("Initialized", "True", stamp),
            ready,
            {**ready, "type": "ContainersReady"},
            _cond("PodScheduled", "True", stamp),
        ]
        status["hostIP"] = self.node_ip
        status["hostIPs"] = [{"ip": self.node_ip}]
        status["startTime"] = stamp
        status["containerStatuses"] = [
            {"name": str(c.get("name", "")), "state": waiting, "lastState": {}, "ready": False, "restartCount": 0,
             "image": str(c.get("image", "")), "imageID": "", "started": False} for c in containers]
        status["qosClass"] = (pod.get("status") or {}).get("qosClass") or qos_class(pod.get("spec") or {})
        if (pod.get("status") or {}).get("message") != message:
            self._events.event(pod, WARNING, "Failed", f"Error: {message}")
        return status

    def _announce(self, pod: Mapping[str, Any], run: _Run, state: _State, names: list[str],
                  containers: Sequence[Mapping[str, Any]]) -> None:
        """Events for container starts and back-offs the pod went through since the last sync."""
        meta = pod["metadata"]
        while run.containers_started < state.runs_started:
            for container in containers:
                cname = container.get("name", "")
                if run.containers_started == 0:
                    self._events.event(pod, NORMAL, "Pulled",
                                       f'Container image "{container.get("image", "")}" already present on machine')
                self._events.event(pod, NORMAL, "Created", f"Created container: {cname}")
                self._events.event(pod, NORMAL, "Started", f"Started container {cname}")
            run.containers_started += 1
        if state.waiting_reason == "CrashLoopBackOff" and state.restart_count not in run.backoffs_reported:
            run.backoffs_reported.add(state.restart_count)
            for cname in names:
                self._events.event(pod, WARNING, "BackOff",
                                   f"Back-off restarting failed container {cname} in pod "
                                   f"{meta['name']}_{meta['namespace']}({meta.get('uid', '')})")


def _cond(type_: str, status: str, stamp: str, *, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": stamp}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _image_id(image: str) -> str:
    repo = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] else image
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"
