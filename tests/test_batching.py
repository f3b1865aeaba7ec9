"""The query budget's fairness and rate, and how the batcher splits, shares errors and counts what it saved.

`send` stands for one request to Prometheus (the real one is `PrometheusClient._fetch`, tested on a
real Prometheus in `test_batching_prometheus.py`): here it records what would have been sent.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.signals.batching import BATCH_LABEL, QueryBatcher, QueryBudget, batched_query
from daemon.signals.promapi import PrometheusUnavailable, QueryResult, Sample


async def test_the_budget_serves_waiting_shapes_in_turn_not_first_come_first_served() -> None:
    budget = QueryBudget(per_second=100)
    for _ in range(100):  # one busy shape drains the bucket
        await budget.acquire("busy")
    granted: list[str] = []

    async def ask(shape: str) -> None:
        await budget.acquire(shape)
        granted.append(shape)

    tasks = [asyncio.create_task(ask("busy")) for _ in range(6)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(ask("quiet")) for _ in range(2)]
    await asyncio.gather(*tasks)
    assert granted == ["busy", "quiet", "busy", "quiet", "busy", "busy", "busy", "busy"]


async def test_the_budget_holds_requests_to_its_rate() -> None:
    budget = QueryBudget(per_second=20)
    started = time.monotonic()
    await asyncio.gather(*(budget.acquire("s") for _ in range(30)))
    elapsed = time.monotonic() - started
    assert elapsed >= 0.45, f"20 at once, then 10 more at 20/s take at least 0.5 s, not {elapsed:.3f} s"
    assert budget.waiting == 0


def _answer(query: str, at: float) -> QueryResult:
    """What Prometheus would answer to `vector(i)` queries: one sample per operand, tagged in a batch."""
    if " or " not in query:
        return QueryResult("vector", (Sample({"q": query}, 0.0),), at)
    operands = query.split(" or ")
    samples = tuple(Sample({BATCH_LABEL: str(i), "q": op.split("\n")[1]}, float(i)) for i, op in enumerate(operands))
    return QueryResult("vector", samples, at)


async def test_batches_are_split_at_max_batch_and_each_caller_gets_its_own_samples() -> None:
    sent: list[str] = []

    async def send(query: str, at: float) -> QueryResult:
        sent.append(query)
        return _answer(query, at)

    batcher = QueryBatcher(send, linger=0.05, max_batch=3)
    queries = [f"vector({i})" for i in range(5)]
    answers = await asyncio.gather(*(batcher.query("shape", q, 100.0) for q in queries))
    assert sent == [batched_query(queries[:3]), batched_query(queries[3:])]
    assert [a.samples for a in answers] == [
        (Sample({"q": "vector(0)"}, 0.0),), (Sample({"q": "vector(1)"}, 1.0),), (Sample({"q": "vector(2)"}, 2.0),),
        (Sample({"q": "vector(3)"}, 0.0),), (Sample({"q": "vector(4)"}, 1.0),)]
    assert (batcher.batches_sent, batcher.queries_saved) == (2, 3)
    await batcher.aclose()


async def test_an_unreachable_prometheus_fails_every_member_once_and_nothing_is_counted_saved() -> None:
    sent: list[str] = []

    async def send(query: str, at: float) -> QueryResult:
        sent.append(query)
        raise PrometheusUnavailable("Prometheus at http://prom:9090 is unreachable: connection refused")

    batcher = QueryBatcher(send, linger=0.01)
    results = await asyncio.gather(*(batcher.query("shape", f"vector({i})", 5.0) for i in range(3)),
                                   return_exceptions=True)
    assert [str(r) for r in results] == ["Prometheus at http://prom:9090 is unreachable: connection refused"] * 3
    assert len(sent) == 1, "one request for the batch, no retry one by one against a Prometheus that is down"
    assert (batcher.queries_saved, batcher.unbatchable) == (0, set())
    await batcher.aclose()


async def test_different_times_and_shapes_are_never_mixed() -> None:
    sent: list[str] = []

    async def send(query: str, at: float) -> QueryResult:
        sent.append(f"{at:g}: {query}")
        return _answer(query, at)

    batcher = QueryBatcher(send, linger=0.01)
    await asyncio.gather(batcher.query("a", "vector(1)", 1.0), batcher.query("a", "vector(2)", 2.0),
                         batcher.query("b", "vector(3)", 1.0))
    assert sorted(sent) == ["1: vector(1)", "1: vector(3)", "2: vector(2)"], "batches of one go as the plain query"
    await batcher.aclose()


async def test_a_failure_that_is_not_prometheus_reaches_every_caller_instead_of_stranding_them() -> None:
    async def send(query: str, at: float) -> QueryResult:
        raise KeyError("resultType")

    batcher = QueryBatcher(send, linger=0.01)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.query("s", f"vector({i})", 1.0) for i in range(2)),
                                                    return_exceptions=True), timeout=5)
    assert [repr(r) for r in results] == ["KeyError('resultType')"] * 2
    await batcher.aclose()


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_second must be positive, not 0"):
        QueryBudget(0)
