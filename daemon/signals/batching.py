"""Prometheus query batching and a query budget: one request per query shape per tick, not one per analysis.

When a platform team bumps a base image, thousands of rollouts ask the same *shape* of query (one
signal template rendered with different namespace / pod-prefix values) in the same second. The
`QueryBatcher` collects the rendered queries of one shape evaluated at the same time (`at`, the
client's coalescing tick) for `linger` seconds and sends them as ONE instant query::

    label_replace((
    <query 0>
    ), "__rollguard_batch", "0", "", "") or label_replace((
    <query 1>
    ), "__rollguard_batch", "1", "", "") or ...

then hands each caller the samples tagged with its own number, the tag removed.

**Why a tagged union, and not `sum by (namespace, pod)` regrouping.** Prometheus evaluates each
operand of `or` on its own, at the same evaluation time, exactly as it would evaluate the query
alone; `label_replace` with an empty source regex only adds the tag; the tags make the operands'
label sets disjoint, so `or` keeps every sample of every operand. The answer for each caller is
therefore the same samples with the same values as its single query, whatever the query does
(ratios, `histogram_quantile`, `topk`, subqueries, `offset`). Rewriting a query into one aggregation
`by` the distinguishing labels would save Prometheus more work, but is only equivalent for some
shapes (a `histogram_quantile` over a regex pod matcher needs `by (le, pod)` re-aggregation, an
average of ratios is not a ratio of sums) and would need the pod-prefix regex re-derived with
`label_replace`: rollguard does not rewrite what it cannot prove equal.

**What falls back to single queries.** A batch Prometheus rejects (`status: error`: a query that is
not an instant vector — a scalar, a range vector, a string — cannot be an operand of `or`; a query
that is itself invalid) or answers too large is retried as single queries, so each caller gets the
answer or the error its own query gives; a shape whose batch was rejected is sent singly from then
on. A batch of one is sent as the plain query. Prometheus' `warnings` of a batch reach every member.
Unreachable Prometheus (refused, timed out) is the same error for every member.

**Budget.** `QueryBudget` lets at most `per_second` requests go (a token bucket holding one
second's worth); requests waiting for it are released round-robin across shapes, so one busy
template cannot starve the others.

`queries_saved` counts single queries answered by a batch beyond its one request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daemon.signals.promapi import (
    PrometheusAnswerTooLarge,
    PrometheusError,
    PrometheusQueryError,
    QueryResult,
    Sample,
)

BATCH_LABEL = "__rollguard_batch"
"""The label that tags each operand of a batched query (reserved `__` prefix: no real series has it)."""

Send = Callable[[str, float], Awaitable[QueryResult]]
"""Sends one instant query evaluated at a time (epoch s) and returns its answer (raises PrometheusError)."""


class QueryBudget:
    """At most `per_second` requests per second; waiters are released round-robin across shapes."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, not {per_second}")
        self.per_second = per_second
        self._capacity = max(1.0, per_second)
        self._tokens = self._capacity
        self._updated: float | None = None
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting for the budget now."""
        return sum(len(q) for q in self._waiting.values())

    async def acquire(self, shape: str) -> None:
        """Wait until a request of `shape` may be sent."""
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self._waiting and self._tokens >= 1:
            self._tokens -= 1
            return
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(shape, deque()).append(future)
        self._schedule(loop)
        try:
            await future
        except asyncio.CancelledError:
            queue = self._waiting.get(shape)
            if queue is not None and future in queue:
                queue.remove(future)
                if not queue:
                    del self._waiting[shape]
            raise

    def _refill(self, now: float) -> None:
        if self._updated is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiting:
            delay = max(0.0, (1 - self._tokens) / self.per_second)
            self._timer = loop.call_later(delay, self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        while self._tokens >= 1 and self._waiting:
            shape, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(shape)  # next shape first: round-robin
            else:
                del self._waiting[shape]
            if not future.done():
                future.set_result(None)
                self._tokens -= 1
        self._schedule(loop)


@dataclass
class _Batch:
    shape: str
    at: float
    members: dict[str, asyncio.Future[QueryResult]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


def batched_query(queries: list[str]) -> str:
    """The tagged union of `queries` (see the module docstring); operand i carries BATCH_LABEL="i"."""
    # Each query on lines of its own: a `# comment` at its end must not swallow the closing parenthesis.
    return " or ".join(f'label_replace((\n{q}\n), "{BATCH_LABEL}", "{i}", "", "")' for i, q in enumerate(queries))


def split_batch(result: QueryResult, count: int) -> list[QueryResult] | None:
    """Each operand's answer in a batched `result`, or None when it is not what a batch must answer."""
    if result.result_type != "vector":
        return None
    parts: list[list[Sample]] = [[] for _ in range(count)]
    for sample in result.samples:
        tag = sample.labels.get(BATCH_LABEL, "")
        if not tag.isdigit() or int(tag) >= count:
            return None
        parts[int(tag)].append(Sample({k: v for k, v in sample.labels.items() if k != BATCH_LABEL}, sample.value))
    return [QueryResult("vector", tuple(p), result.evaluated_at, result.warnings) for p in parts]


class QueryBatcher:
    """Batches same-shape queries of one evaluation time into one request (see the module docstring)."""

    def __init__(self, send: Send, *, linger: float = 0.05, max_batch: int = 200,
                 budget: QueryBudget | None = None) -> None:
        """`send` sends one query; `linger`: seconds a batch waits for more members after its first;
        `max_batch`: members at most per request (bounds the request and answer sizes)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._send = send
        self._linger = linger
        self._max_batch = max_batch
        self._budget = budget
        self._open: dict[tuple[str, float], _Batch] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.unbatchable: set[str] = set()
        """Shapes whose batch Prometheus rejected: sent as single queries from then on."""
        self.queries_saved = 0
        """Single queries answered by a batch beyond its one request."""
        self.batches_sent = 0
        """Batched requests (two members or more) sent."""

    async def query(self, shape: str, promql: str, at: float) -> QueryResult:
        """The answer to `promql` (rendered from `shape`) at `at` (epoch s), batched with its peers."""
        if shape in self.unbatchable or self._max_batch == 1:
            return await self._single(shape, promql, at)
        return await asyncio.shield(self.submit(shape, promql, at))

    def submit(self, shape: str, promql: str, at: float) -> asyncio.Future[QueryResult]:
        """`query` without awaiting: the future its batch resolves (shared by every caller of the same
        query in the batch: await it shielded). A shape sent singly gets a task of its own."""
        loop = asyncio.get_running_loop()
        if shape in self.unbatchable or self._max_batch == 1:
            task = loop.create_task(self._single(shape, promql, at), name="prometheus-query")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_retrieve)  # its callers may all be gone by then
            return task
        batch = self._open.get((shape, at))
        if batch is None:
            batch = _Batch(shape, at)
            self._open[(shape, at)] = batch
            batch.timer = loop.call_later(self._linger, self._flush, batch)
        future = batch.members.get(promql)
        if future is None:
            future = loop.create_future()
            batch.members[promql] = future
            if len(batch.members) >= self._max_batch:
                self._flush(batch)
        return future

    async def aclose(self) -> None:
        """Cancel the batches being sent and forget the open ones (their callers are cancelled too)."""
        for batch in self._open.values():
            if batch.timer is not None:
                batch.timer.cancel()
            for future in batch.members.values():
                future.cancel()
        self._open.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _flush(self, batch: _Batch) -> None:
        if self._open.get((batch.shape, batch.at)) is batch:
            del self._open[(batch.shape, batch.at)]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        task = asyncio.get_running_loop().create_task(self._run(batch), name="prometheus-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        queries = list(batch.members)
        futures = [batch.members[q] for q in queries]
        try:
            answers = await self._answers(batch.shape, queries, batch.at)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # a bug must reach the callers (each signal's ERROR), never strand them
            answers = [exc] * len(queries)
        for future, answer in zip(futures, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
                # Retrieved by whoever awaits it; a caller gone meanwhile must not leave a warning behind.
                future.add_done_callback(_retrieve)
            else:
                future.set_result(answer)

    async def _answers(self, shape: str, queries: list[str], at: float) -> list[QueryResult | Exception]:
        if len(queries) == 1:
            return [await self._attempt(shape, queries[0], at)]
        try:
            await self._acquire(shape)
            result = await self._send(batched_query(queries), at)
        except PrometheusQueryError:
            self.unbatchable.add(shape)
            return await self._singles(shape, queries, at)
        except PrometheusAnswerTooLarge:
            return await self._singles(shape, queries, at)
        except PrometheusError as exc:
            return [exc] * len(queries)
        parts = split_batch(result, len(queries))
        if parts is None:
            self.unbatchable.add(shape)
            return await self._singles(shape, queries, at)
        self.batches_sent += 1
        self.queries_saved += len(queries) - 1
        return list(parts)

    async def _singles(self, shape: str, queries: list[str], at: float) -> list[QueryResult | Exception]:
        return list(await asyncio.gather(*(self._attempt(shape, q, at) for q in queries)))

    async def _attempt(self, shape: str, promql: str, at: float) -> QueryResult | Exception:
        try:
            return await self._single(shape, promql, at)
        except PrometheusError as exc:
            return exc

    async def _single(self, shape: str, promql: str, at: float) -> QueryResult:
        await self._acquire(shape)
        return await self._send(promql, at)

    async def _acquire(self, shape: str) -> None:
        if self._budget is not None:
            await self._budget.acquire(shape)


def _retrieve(future: asyncio.Future[QueryResult]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
