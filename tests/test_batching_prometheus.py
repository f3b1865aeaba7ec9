"""Batched queries give exactly the single queries' answers, on the real Prometheus, for every example shape.

Every `prometheus:` query template in `rules/` and `tests/data/` (and a few shapes that must fall back:
a scalar, a range vector, a broken query) is rendered for several rollouts — two namespaces, old and
new pods, one with no pods at all — and asked once alone and once through the `QueryBatcher`, at the
same evaluation time. The answers must be identical: same result type, same series (labels), same
values (NaN included), and the batcher must have sent one request per shape where it could.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from daemon.clock import ScaledClock
from daemon.measurement import SignalContext
from daemon.rules.templates import TemplateError, render_promql
from daemon.signals.batching import QueryBatcher
from daemon.signals.promapi import PrometheusClient, PrometheusError, QueryResult
from sim.store import Store
from tests.promkit import instant_query, make_pod, poll, prometheus_stack

ROOT = Path(__file__).resolve().parent.parent

# Shapes beyond the examples: what cannot be an operand of `or` (scalar, range vector), what
# Prometheus rejects, several series per rollout, 0/0, a trailing comment.
EXTRA_SHAPES = (
    'scalar(sum(rate(http_requests_total{namespace="{{namespace}}"}[15s])))',
    'http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}[15s]',
    'sum(rate(http_requests_total{namespace="{{namespace}}"}[15s])',
    'rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code="500"}[15s])',
    'sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code="404"}[15s]))'
    ' / sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code="404"}[15s]))',
    'sum(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}) # the total so far',
)
UNBATCHABLE = {EXTRA_SHAPES[0], EXTRA_SHAPES[1], EXTRA_SHAPES[2]}


def example_shapes() -> list[str]:
    """Every `prometheus.query` in the YAML files of rules/ and tests/data/, once each."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            query = (node.get("prometheus") or {}).get("query") if isinstance(node.get("prometheus"), dict) else None
            if isinstance(query, str) and query not in found:
                found.append(query)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for directory in (ROOT / "rules", ROOT / "tests" / "data"):
        for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):
            if "hostile" in path.parts:
                continue  # YAML bombs and binary junk for the loader's hostile-input tests
            try:
                for document in yaml.safe_load_all(path.read_text()):
                    walk(document)
            except yaml.YAMLError:
                continue  # the bad-YAML examples of the loader's tests
    return found


def contexts() -> list[SignalContext]:
    return [SignalContext(namespace=ns, deployment="backend", revision=rev, pod_template_hash=h,
                          pod_prefix=f"backend-{h}-", labels={"app": "backend"}, rollout_started_at=0.0)
            for ns, rev, h in (("staging", 2, "new222"), ("staging", 1, "old111"), ("prod", 2, "new222"),
                               ("nowhere", 2, "new222"))]


def comparable(answer: QueryResult | PrometheusError) -> Any:
    if isinstance(answer, PrometheusError):
        return ("error", type(answer).__name__)
    return (answer.result_type, answer.evaluated_at,
            sorted((sorted(s.labels.items()), "NaN" if math.isnan(s.value) else s.value) for s in answer.samples))


@pytest.mark.prometheus
async def test_batched_answers_equal_single_answers_for_every_example_shape(tmp_path: Path) -> None:
    shapes = example_shapes()
    assert len(shapes) >= 4, f"the example rules changed: {shapes}"
    clock = ScaledClock(1.0)
    store = Store(clock)
    for namespace, ratio in (("staging", "0.1"), ("prod", "0.02")):
        for suffix in ("aaaaa", "bbbbb"):
            make_pod(store, namespace, f"backend-new222-{suffix}", template_hash="new222",
                     env={"SIM_ERROR_RATIO": ratio})
        make_pod(store, namespace, "backend-old111-ccccc", template_hash="old111", env={"SIM_ERROR_RATIO": "0"})

    async with prometheus_stack(store, clock, tmp_path, scrape_interval=1.0) as stack, \
            aiohttp.ClientSession() as session:
        url = stack.prometheus.url

        async def enough_samples() -> float | None:
            result = await instant_query(session, url, 'min(count_over_time(http_requests_total[15s]))')
            return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) >= 4 else None

        await poll(enough_samples, timeout=45, what="4 scrapes of every pod in the 15s window")
        at = float(math.floor(clock.now()) - 1)
        single = PrometheusClient(url, session, timeout=5)
        batched = PrometheusClient(url, session, timeout=5, batcher=lambda send: QueryBatcher(send, linger=0.05))
        batcher = batched.batcher
        assert isinstance(batcher, QueryBatcher)
        saved = 0
        try:
            for shape in [*shapes, *EXTRA_SHAPES]:
                try:
                    queries = [render_promql(shape, ctx.template_variables()) for ctx in contexts()]
                except TemplateError:
                    continue  # a bad example (an unknown variable): the rules loader refuses it
                alone: list[QueryResult | PrometheusError] = []
                for query in queries:
                    try:
                        alone.append(await single.query(query, at=at))
                    except PrometheusError as exc:
                        alone.append(exc)
                sent_before = batched.requests_sent
                together = await _gather(batched, shape, queries, at)
                assert [comparable(a) for a in together] == [comparable(a) for a in alone], shape
                if shape in UNBATCHABLE:
                    assert shape in batcher.unbatchable, shape
                else:
                    assert shape not in batcher.unbatchable, shape
                    assert batched.requests_sent - sent_before == 1, f"one request for the whole shape: {shape}"
                    saved += len(set(queries)) - 1
            # A batch too long for a URL goes as a form POST: same answers.
            many = [render_promql(shapes[0], {**contexts()[i % 3].template_variables(), "podPrefix": f"backend-{i}-"})
                    for i in range(60)] + [render_promql(shapes[0], contexts()[0].template_variables())]
            assert sum(len(q) for q in many) > 4000
            moment = at + 0.5  # not an evaluation time asked above: nothing is reused from the coalescer
            alone = [await single.query(q, at=moment) for q in many]
            sent_before = batched.requests_sent
            together = await _gather(batched, shapes[0], many, moment)
            assert [comparable(a) for a in together] == [comparable(a) for a in alone]
            assert batched.requests_sent - sent_before == 1
            assert together[-1].samples if isinstance(together[-1], QueryResult) else False, together[-1]
            saved += len(many) - 1
            # The examples do have data: the comparison was not of empty answers only.
            first = await batched.query(render_promql(shapes[0], contexts()[0].template_variables()), at=at + 1,
                                        shape=shapes[0])
            assert first.samples, shapes[0]
        finally:
            await batched.aclose()
            await single.aclose()
    assert batcher.queries_saved == saved


async def _gather(client: PrometheusClient, shape: str, queries: list[str],
                  at: float) -> list[QueryResult | PrometheusError]:
    async def one(query: str) -> QueryResult | PrometheusError:
        try:
            return await client.query(query, at=at, shape=shape)
        except PrometheusError as exc:
            return exc

    return list(await asyncio.gather(*(one(q) for q in queries)))
