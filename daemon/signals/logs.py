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

Bounds (a bad deploy is a workload behaving badly; it must not stall or blind the daemon): a line
is kept and matched on its first `MAX_LINE_BYTES` bytes only (cut lines are counted in the message
and `details["cut_lines"]`; bytes that are not UTF-8 become U+FFFD); at most `MAX_BYTES_PER_READ`
bytes are read per container per measurement (the rest at the next tick); large batches of lines are
matched off the event loop. The stream is read in chunks, so no line length raises.

Limits: lines a container wrote between the last read and a crash are missed (the kubelet serves
them only with `previous=true`, which this provider does not read); lines rotated away by the
kubelet before they were read are missed.

Phases: no pod yet, or no container started yet → PENDING (the lines cannot exist yet). Pods whose
container is waiting to start (API 400 "waiting to start", phase Pending) or that vanished between
list and read (404) are skipped and named in the message. The API unreachable, or any other refusal (403: RBAC lacks
`pods/log`, 400: no such container) → ERROR: an undercount must never pass for a clean log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from daemon.kube.client import KubeApiError, KubeClient, KubeError, api_path
from daemon.rules.model import LogsSignal
from daemon.rules.regexes import Searchable, compile_regex
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.session import describe_error, excerpt, one_line

__all__ = ["MAX_BYTES_PER_READ", "MAX_LINE_BYTES", "LogsProvider", "bounded_lines"]

_NS = 1_000_000_000
# The kubelet's `timestamps=true` prefix: RFC 3339 with up to nine fractional digits (RFC3339Nano
# trims trailing zeros), UTC `Z` or an offset.
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_WAITING = ("waiting to start", "ContainerCreating", "PodInitializing")
_NAMED_SKIPS = 3

MAX_LINE_BYTES = 16 * 1024
"""Bytes of one log line kept and matched; the rest of a longer line is skipped unread-into-memory and the
line counted as cut (a stack trace line is far shorter; a 4 MiB line is a workload misbehaving)."""
MAX_BYTES_PER_READ = 8 * 1024 * 1024
"""Bytes of log read per container per measurement; a read stops at the first line end past it and the
rest is read at the next tick (the cursor says where), so a flooding pod cannot stall a tick."""
MATCH_BATCH_BYTES = 256 * 1024
"""Kept bytes of lines matched in one batch; the cursor moves once per batch."""
MATCH_OFF_LOOP_BYTES = 32 * 1024
"""A batch at least this large is matched in a worker thread (`asyncio.to_thread`); smaller ones (the common
tick) in place. Measured: `(?i)\\b(error|traceback)\\b` over 256 KiB of short lines takes ~20 ms on a busy
2-core machine, too long for the loop; 32 KiB takes ~3 ms."""


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
    cut_lines: int = 0
    """Lines longer than MAX_LINE_BYTES counted so far (matched on their first MAX_LINE_BYTES only)."""
    capped: bool = False
    """The last measurement stopped reading some container at MAX_BYTES_PER_READ."""


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
            state.capped = False
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._measure(ctx, state)
            except TimeoutError:
                return Measurement(Phase.ERROR, None, f"reading the pod logs took longer than {self._timeout:g}s")
            except Exception as exc:
                # A provider's own bug must be this signal's ERROR, never an exception that ends the analysis.
                return Measurement(Phase.ERROR, None, one_line(f"the logs provider failed: {describe_error(exc)}"))

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
            return Measurement(Phase.PENDING, None, f"no pods of ReplicaSet {ctx.namespace}/{replicaset} yet")

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
            return Measurement(Phase.PENDING, None, one_line(
                f"no container of ReplicaSet {ctx.namespace}/{replicaset} has started yet{_skips_text(skips)}"))
        total = sum(state.matched.values())
        details: dict[str, float] = {f"pod/{state.names[uid]}": float(n) for uid, n in state.matched.items()}
        details["total"] = float(total)
        pods_text = f"{len(read_pods)} pod" + ("" if len(read_pods) == 1 else "s")
        message = f"{total} matching log line{'' if total == 1 else 's'} in {pods_text} since the rollout started"
        if state.cut_lines:
            details["cut_lines"] = float(state.cut_lines)
            message += f"; {state.cut_lines} line{'' if state.cut_lines == 1 else 's'} cut at {MAX_LINE_BYTES} bytes"
        if state.capped:
            message += f"; read capped at {MAX_BYTES_PER_READ} bytes per container (the rest is read on the next ticks)"
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
        path = api_path("v1", "pods", ctx.namespace, name, "log")
        params = {"container": container, "timestamps": True, "sinceTime": _since_time(cursor.ns)}
        reader = _ContainerRead(cursor, state, uid=uid, pod=name, evidence_lines=self._evidence_lines)
        try:
            # An async generator (typed as an iterator): close it so the response is released at once.
            chunks = cast(AsyncGenerator[bytes, None],
                          self._kube.stream_chunks(path, params, timeout=self._read_timeout))
            async with contextlib.aclosing(chunks):
                async for raw, length, cut in bounded_lines(chunks, MAX_LINE_BYTES):
                    if reader.add(raw, length, cut=cut):
                        await reader.flush(self._pattern)
                    if reader.bytes_read >= MAX_BYTES_PER_READ:
                        state.capped = True
                        break
            await reader.flush(self._pattern)
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


async def bounded_lines(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[tuple[bytes, int, bool]]:
    """(the first `max_line` bytes of each line, its full length in bytes with the newline, whether it was cut).

    Never holds more than `max_line` bytes of one line however long it is (the rest is skipped as
    it streams by); a last line without a newline is yielded when the stream ends.
    """
    head = bytearray()
    length = 0
    cut = False
    async for chunk in chunks:
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = newline if newline >= 0 else len(chunk)
            room = max_line - len(head)
            if room > 0:
                head += chunk[start:min(end, start + room)]
            cut = cut or end - start > room
            length += end - start
            if newline < 0:
                break
            yield bytes(head), length + 1, cut
            head.clear()
            length, cut = 0, False
            start = newline + 1
    if length:
        yield bytes(head), length, cut


class _ContainerRead:
    """The lines of one read of one container, matched in batches; the cursor moves only after a batch is counted.

    Keeping the cursor and the counts in step means a read cut short (timeout, byte cap) counts
    every line exactly once: what was not yet matched is read again at the next tick.
    """

    def __init__(self, cursor: _Cursor, state: _RolloutState, *, uid: str, pod: str, evidence_lines: int) -> None:
        self._cursor = cursor
        self._state = state
        self._uid = uid
        self._pod = pod
        self._evidence_lines = evidence_lines
        self._base_ns, self._base_seen = cursor.ns, cursor.seen
        self._at_base = 0
        self._pending_ns, self._pending_seen = cursor.ns, cursor.seen
        self._texts: list[str] = []
        self._batch_bytes = 0
        self._cut = 0
        self.bytes_read = 0
        """Bytes of log received by this read, whole lines (cut parts included)."""

    def add(self, raw: bytes, length: int, *, cut: bool) -> bool:
        """Take one line (its kept head and full length); True when the batch is due for matching."""
        self.bytes_read += length
        line = raw.decode(errors="replace").rstrip("\n")
        stamp, _, text = line.partition(" ")
        ns = parse_kubelet_time(stamp)
        if ns is None:  # no kubelet prefix (never from a kubelet): take it as the cursor's moment
            ns, text = self._pending_ns, line
        if ns < self._base_ns:
            return False
        if ns == self._base_ns:
            self._at_base += 1
            if self._at_base <= self._base_seen:
                return False  # counted by an earlier read
        if ns > self._pending_ns:
            self._pending_ns, self._pending_seen = ns, 1
        elif ns == self._pending_ns:
            self._pending_seen += 1
        self._texts.append(text)
        self._cut += cut
        self._batch_bytes += len(raw)
        return self._batch_bytes >= MATCH_BATCH_BYTES

    async def flush(self, pattern: Searchable) -> None:
        """Match the batch (off the event loop when it is large) and commit its counts and the cursor."""
        texts, self._texts = self._texts, []
        size, self._batch_bytes = self._batch_bytes, 0
        if size >= MATCH_OFF_LOOP_BYTES:
            matching = await asyncio.to_thread(_matching, pattern, texts)
        else:
            matching = _matching(pattern, texts)
        # One synchronous step from here on: counts, evidence and cursor change together.
        state = self._state
        if matching:
            state.matched[self._uid] = state.matched.get(self._uid, 0) + len(matching)
            for text in matching[: max(0, self._evidence_lines - len(state.evidence))]:
                state.evidence.append(excerpt(f"{self._pod}: {text}"))
        state.cut_lines += self._cut
        self._cut = 0
        self._cursor.ns, self._cursor.seen = self._pending_ns, self._pending_seen


def _matching(pattern: Searchable, texts: list[str]) -> list[str]:
    return [text for text in texts if pattern.search(text)]


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
