"""Pod-log signals: how many lines of the new pods' logs since the rollout started match a regex.

`LogsProvider` lists the pods of the measured ReplicaSet (label selector `pod-template-hash=<hash>`
in the rollout's namespace, then only pods the ReplicaSet `<deployment>-<hash>` owns: two
Deployments with identical templates share a hash), reads each pod's containers' logs through the
Kubernetes API (`pods/{name}/log`, `timestamps=true`) and counts the lines whose text (after the
kubelet's timestamp) matches the signal's pattern. The value is the total; `details` has one
`pod/<name>` count per pod and `total`; `evidence` quotes the first few matching lines.

**Incremental reading.** Reading every log from the rollout start again on every tick would cost
O(log volume × ticks). The provider keeps, per rollout and per (pod uid, container), a cursor: the
newest kubelet timestamp counted (nanoseconds) and how many lines carrying exactly that timestamp
were counted. The next read asks for `sinceTime=` that timestamp rounded down to the second (the
API's precision) and skips what the cursor says was counted, so a line is counted exactly once
even when several share a timestamp or a read was cut short. The first read starts at the rollout
start (the cursor's initial timestamp), so lines written before it are never counted. Counts of
pods that have since gone away are kept: their errors happened during the rollout all the same.
State for a rollout not measured for `forget_after` seconds is dropped.

Limits: lines a container wrote between the last read and a crash are missed (the kubelet serves
them only with `previous=true`, which this provider does not read); lines rotated away by the
kubelet before they were read are missed.

Phases: no pod yet, or no container started yet → INCONCLUSIVE. Pods whose container is waiting to
start (API 400 "waiting to start", phase Pending) or that vanished between list and read (404) are
skipped and named in the message. The API unreachable, or any other refusal (403: RBAC lacks
`pods/log`, 400: no such container) → ERROR: an undercount must never pass for a clean log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from daemon.kube.client import KubeApiError, KubeClient, KubeError, api_path
from daemon.rules.model import LogsSignal
from daemon.rules.regexes import compile_regex
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.session import excerpt, one_line

__all__ = ["LogsProvider"]

_NS = 1_000_000_000
# The kubelet's `timestamps=true` prefix: RFC 3339 with up to nine fractional digits (RFC3339Nano
# trims trailing zeros), UTC `Z` or an offset.
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_WAITING = ("waiting to start", "ContainerCreating", "PodInitializing")
_NAMED_SKIPS = 3


def parse_kubelet_time(stamp: str) -> int | None:
    """Epoch nanoseconds of a kubelet log timestamp, None when `stamp` is not one."""
    match = _STAMP.fullmatch(stamp)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    return int(seconds) * _NS + int((fraction or "").ljust(9, "0"))


def _since_time(ns: int) -> str:
    """RFC 3339 at second precision, rounded down (the API's `sinceTime` has whole seconds)."""
    return datetime.fromtimestamp(ns // _NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Cursor:
    """Where reading a container's log resumes: lines before `ns` and the first `seen` lines at `ns` are counted."""

    ns: int
    seen: int = 0


@dataclass
class _RolloutState:
    """What has been counted for one rollout (one ReplicaSet since one rollout start)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cursors: dict[tuple[str, str], _Cursor] = field(default_factory=dict)
    """(pod uid, container) → cursor."""
    matched: dict[str, int] = field(default_factory=dict)
    """Pod uid → matching lines counted so far (all containers)."""
    names: dict[str, str] = field(default_factory=dict)
    """Pod uid → pod name."""
    evidence: list[str] = field(default_factory=list)
    last_used: float = 0.0


@dataclass(frozen=True)
class _Skip:
    pod: str
    reason: str


class LogsProvider:
    """Measures one `logs:` signal: matching lines in the new pods' logs since the rollout started.

    `concurrency` bounds the log reads in flight for one measurement; `read_timeout` bounds one read
    and `timeout` the whole measurement (seconds); `evidence_lines` is how many matching lines are
    quoted; `forget_after` is how long (seconds) the counts of a rollout no longer measured are kept.
    """

    def __init__(self, spec: LogsSignal, *, kube: KubeClient, concurrency: int = 4, read_timeout: float = 30.0,
                 timeout: float = 60.0, evidence_lines: int = 3, forget_after: float = 7200.0) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.spec = spec
        self._pattern = compile_regex(spec.pattern)
        self._kube = kube
        self._concurrency = concurrency
        self._read_timeout = read_timeout
        self._timeout = timeout
        self._evidence_lines = evidence_lines
        self._forget_after = forget_after
        self._rollouts: OrderedDict[tuple[str, str, str, float], _RolloutState] = OrderedDict()

    async def measure(self, ctx: SignalContext) -> Measurement:
        """Count the matching lines of `ctx`'s ReplicaSet's pods since `ctx.rollout_started_at`."""
        state = self._state_of(ctx)
        # One measurement per rollout at a time: two overlapping reads would count the same lines twice.
        async with state.lock:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._measure(ctx, state)
            except TimeoutError:
                return Measurement(Phase.ERROR, None, f"reading the pod logs took longer than {self._timeout:g}s")

    # ----- internals -----

    def _state_of(self, ctx: SignalContext) -> _RolloutState:
        now = asyncio.get_running_loop().time()
        key = (ctx.namespace, ctx.deployment, ctx.pod_template_hash, ctx.rollout_started_at)
        state = self._rollouts.get(key)
        if state is None:
            state = self._rollouts[key] = _RolloutState()
        self._rollouts.move_to_end(key)
        state.last_used = now
        # Least recently measured first: stop at the first one still in use.
        while self._rollouts:
            oldest_key, oldest = next(iter(self._rollouts.items()))
            if now - oldest.last_used <= self._forget_after or oldest.lock.locked():
                break
            del self._rollouts[oldest_key]
        return state

    async def _measure(self, ctx: SignalContext, state: _RolloutState) -> Measurement:
        replicaset = f"{ctx.deployment}-{ctx.pod_template_hash}"
        try:
            listed = await self._kube.list(api_path("v1", "pods", ctx.namespace),
                                           {"labelSelector": f"pod-template-hash={ctx.pod_template_hash}"})
        except KubeError as exc:
            return Measurement(Phase.ERROR, None, one_line(f"cannot list the pods of {ctx.namespace}/{replicaset}: "
                                                           f"{exc}"))
        pods = [p for p in listed.get("items") or [] if _owned_by(p, replicaset)]
        if not pods and not state.matched:
            return Measurement(Phase.INCONCLUSIVE, None, f"no pods of ReplicaSet {ctx.namespace}/{replicaset} yet")

        start_ns = math.floor(ctx.rollout_started_at * _NS)
        skips: list[_Skip] = []
        errors: list[str] = []
        reads: list[tuple[Mapping[str, Any], str]] = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            name, uid = str(meta.get("name", "")), str(meta.get("uid") or meta.get("name", ""))
            state.names[uid] = name
            containers = self._containers(pod)
            if (pod.get("status") or {}).get("phase") == "Pending" or not containers:
                skips.append(_Skip(name, "waiting to start"))
                continue
            for container in containers:
                reads.append((pod, container))

        semaphore = asyncio.Semaphore(self._concurrency)

        async def read(pod: Mapping[str, Any], container: str) -> None:
            async with semaphore:
                outcome = await self._read(ctx, state, pod, container, start_ns)
            if isinstance(outcome, _Skip):
                skips.append(outcome)
            elif outcome is not None:
                errors.append(outcome)

        async with asyncio.TaskGroup() as group:
            for pod, container in reads:
                group.create_task(read(pod, container), name=f"logs-{ctx.namespace}/{pod['metadata']['name']}")

        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return Measurement(Phase.ERROR, None, one_line(errors[0] + more))
        skipped_pods = {s.pod for s in skips}
        read_pods = {state.names[uid] for uid in state.matched}
        if not read_pods:
            return Measurement(Phase.INCONCLUSIVE, None, one_line(
                f"no container of ReplicaSet {ctx.namespace}/{replicaset} has started yet{_skips_text(skips)}"))
        total = sum(state.matched.values())
        details: dict[str, float] = {f"pod/{state.names[uid]}": float(n) for uid, n in state.matched.items()}
        details["total"] = float(total)
        pods_text = f"{len(read_pods)} pod" + ("" if len(read_pods) == 1 else "s")
        message = f"{total} matching log line{'' if total == 1 else 's'} in {pods_text} since the rollout started"
        return Measurement(Phase.OK, float(total), one_line(message + _skips_text(skips, skipped_pods - read_pods)),
                           evidence=tuple(state.evidence), details=details)

    def _containers(self, pod: Mapping[str, Any]) -> list[str]:
        if self.spec.container is not None:
            return [self.spec.container]
        return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name")]

    async def _read(self, ctx: SignalContext, state: _RolloutState, pod: Mapping[str, Any], container: str,
                    start_ns: int) -> _Skip | str | None:
        """Count the new lines of one container: None when read, a _Skip, or an error message."""
        meta = pod.get("metadata") or {}
        name, uid = str(meta.get("name", "")), str(meta.get("uid") or meta.get("name", ""))
        cursor = state.cursors.setdefault((uid, container), _Cursor(start_ns))
        # Resume from the cursor; lines at or after its second come back and are sorted out below.
        base_ns, base_seen = cursor.ns, cursor.seen
        at_base = 0
        path = api_path("v1", "pods", ctx.namespace, name, "log")
        params = {"container": container, "timestamps": True, "sinceTime": _since_time(base_ns)}
        try:
            # An async generator (typed as an iterator): close it so the response is released at once.
            lines = cast(AsyncGenerator[str, None], self._kube.stream_lines(path, params, timeout=self._read_timeout))
            async with contextlib.aclosing(lines):
                async for line in lines:
                    stamp, _, text = line.partition(" ")
                    ns = parse_kubelet_time(stamp)
                    if ns is None:  # no kubelet prefix (never from a kubelet): take it as the cursor's moment
                        ns, text = cursor.ns, line
                    if ns < base_ns:
                        continue
                    if ns == base_ns:
                        at_base += 1
                        if at_base <= base_seen:
                            continue  # counted by an earlier read
                    # One synchronous step per line: a read cut short leaves a consistent cursor.
                    if ns > cursor.ns:
                        cursor.ns, cursor.seen = ns, 1
                    elif ns == cursor.ns:
                        cursor.seen += 1
                    if self._pattern.search(text):
                        state.matched[uid] = state.matched.get(uid, 0) + 1
                        if len(state.evidence) < self._evidence_lines:
                            state.evidence.append(excerpt(f"{name}: {text}"))
        except KubeApiError as exc:
            if exc.code == 404:
                return _Skip(name, "gone")
            if exc.code == 400 and any(marker in exc.message for marker in _WAITING):
                return _Skip(name, "waiting to start")
            return one_line(f"cannot read the log of {ctx.namespace}/{name} ({container}): {exc}")
        except KubeError as exc:
            return one_line(f"cannot read the log of {ctx.namespace}/{name} ({container}): {exc}")
        state.matched.setdefault(uid, 0)  # read: the pod counts (with 0) from now on
        return None


def _owned_by(pod: Mapping[str, Any], replicaset: str) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == "ReplicaSet" and r.get("name") == replicaset for r in refs)


def _skips_text(skips: list[_Skip], only: set[str] | None = None) -> str:
    """`; skipped: a (waiting to start), b (gone) and 2 more` or ""."""
    shown: dict[str, str] = {}
    for skip in skips:
        if only is None or skip.pod in only:
            shown.setdefault(skip.pod, skip.reason)
    if not shown:
        return ""
    named = [f"{pod} ({reason})" for pod, reason in sorted(shown.items())]
    more = f" and {len(named) - _NAMED_SKIPS} more" if len(named) > _NAMED_SKIPS else ""
    return "; skipped: " + ", ".join(named[:_NAMED_SKIPS]) + more
