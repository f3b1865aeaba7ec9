"""Prometheus signals, judged by the real Prometheus scraping simulated pods, and coalescing counted on the wire.

The real-Prometheus tests run the Debian `prometheus` binary through `sim.prometheus` (they fail
with the install hint where it is missing). Coalescing and the odd answers Prometheus itself will
not give on demand (a slow answer, a proxy's HTML error page) are tested on a small aiohttp server
that speaks the `/api/v1/query` API and counts what reaches it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from daemon.clock import FakeClock, ScaledClock
from daemon.rules.model import BaselineMode, PrometheusSignal
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.batching import QueryBatcher
from daemon.signals.prometheus import PrometheusClient, PrometheusProvider, QueryCoalescer
from sim.prometheus import PrometheusServer
from sim.store import Store
from tests.promkit import instant_query, make_pod, poll, prometheus_stack

ERROR_RATIO = """
sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code=~"5.."}[15s]))
/ sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}[15s]))
"""
# Enough scrapes in the window that one request more or less cannot move the ratio by 0.01.
SAMPLES_IN_WINDOW = 'min(count_over_time(http_requests_total{namespace="staging"}[15s]))'


def context(*, namespace: str = "staging", template_hash: str = "new222", revision: int = 2,
            started: float = 0.0) -> SignalContext:
    return SignalContext(namespace=namespace, deployment="backend", revision=revision,
                         pod_template_hash=template_hash, pod_prefix=f"backend-{template_hash}-",
                         labels={"app": "backend"}, rollout_started_at=started)


# ----- against the real Prometheus -----

@pytest.mark.prometheus
async def test_real_prometheus_values_baselines_and_what_is_not_a_value(tmp_path: Path) -> None:
    clock = ScaledClock(1.0)  # Prometheus samples in real time: the workload's clock must match it
    store = Store(clock)
    for suffix in ("aaaaa", "bbbbb"):
        make_pod(store, "staging", f"backend-old111-{suffix}", template_hash="old111", env={"SIM_ERROR_RATIO": "0.02"})
        make_pod(store, "staging", f"backend-new222-{suffix}", template_hash="new222", env={"SIM_ERROR_RATIO": "0.12"})
    make_pod(store, "idle", "backend-new222-idle1", template_hash="new222", env={"SIM_RPS": "0"})
    before_any_pod = clock.now() - 120

    async with prometheus_stack(store, clock, tmp_path, scrape_interval=1.0) as stack, \
            aiohttp.ClientSession() as session:
        url = stack.prometheus.url
        client = PrometheusClient(url, session, timeout=5)
        new, old = context(), context(template_hash="old111", revision=1)

        async def enough_samples() -> float | None:
            result = await instant_query(session, url, SAMPLES_IN_WINDOW)
            return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) >= 8 else None

        await poll(enough_samples, timeout=45, what="8 scrapes of every pod in the 15s window")
        rollout_started = clock.now()

        error_ratio = PrometheusProvider(PrometheusSignal(ERROR_RATIO, BaselineMode.PREVIOUS), client=client)
        measured = await error_ratio.measure(new)
        assert measured.phase is Phase.OK, measured
        assert isinstance(measured.value, float)
        assert measured.value == pytest.approx(0.12, abs=0.01), measured
        assert measured.details == {"series": 1.0}

        baseline = await error_ratio.measure_at(old, rollout_started)
        assert baseline.phase is Phase.OK, baseline
        assert baseline.value == pytest.approx(0.02, abs=0.01), baseline
        assert "at " in baseline.message, baseline.message

        before = await error_ratio.measure_at(new, before_any_pod)
        assert before.phase is Phase.INCONCLUSIVE, f"no sample existed then, so `time` was not honoured: {before}"

        nowhere = await error_ratio.measure(context(namespace="nowhere"))
        # Now, an empty answer may still fill (the new pods not scraped yet): pending, not inconclusive.
        assert (nowhere.phase, nowhere.value) == (Phase.PENDING, None), nowhere
        assert "no data" in nowhere.message

        no_traffic = await error_ratio.measure(context(namespace="idle"))
        assert no_traffic.phase is Phase.INCONCLUSIVE, f"0/0 is NaN, nothing to judge: {no_traffic}"
        assert "NaN" in no_traffic.message

        per_pod = PrometheusProvider(PrometheusSignal(
            'rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code="500"}[15s])'),
            client=client)
        several = await per_pod.measure(new)
        assert several.phase is Phase.INCONCLUSIVE, several
        assert "2 series" in several.message, several.message
        assert "sum(" in several.message, several.message
        assert len(several.evidence) == 2, several
        assert all("backend-new222-" in e for e in several.evidence), several

        scalar = await PrometheusProvider(PrometheusSignal("scalar(vector(0.5))"), client=client).measure(new)
        assert (scalar.phase, scalar.value) == (Phase.OK, 0.5), scalar

        broken = PrometheusProvider(PrometheusSignal(
            'sum(rate(http_requests_total{namespace="{{namespace}}"}[15s])'), client=client)
        bad = await broken.measure(new)
        assert (bad.phase, bad.value) == (Phase.ERROR, None), bad
        assert "(bad_data)" in bad.message, bad.message
        assert "parse error" in bad.message, f"Prometheus' own message: {bad.message}"
        assert "\n" not in bad.message

        range_vector = await PrometheusProvider(PrometheusSignal(
            'http_requests_total{namespace="{{namespace}}",pod="backend-new222-aaaaa",code="500"}[15s]'),
            client=client).measure(new)
        assert range_vector.phase is Phase.ERROR, range_vector
        assert "range vector" in range_vector.message, range_vector


@pytest.mark.prometheus
async def test_a_stopped_prometheus_is_an_error_never_a_failure(tmp_path: Path) -> None:
    (tmp_path / "targets.json").write_text("[]")
    async with PrometheusServer(tmp_path / "targets.json", scrape_interval=1.0) as prometheus, \
            aiohttp.ClientSession() as session:
        with_credentials = prometheus.url.replace("http://", "http://rollguard:s3cret@")
        client = PrometheusClient(with_credentials, session, timeout=5, tick=0)
        provider = PrometheusProvider(PrometheusSignal("vector(1)"), client=client)
        assert (await provider.measure(context())).value == 1.0

        await prometheus.stop()
        down = await provider.measure(context())
        assert (down.phase, down.value) == (Phase.ERROR, None), down
        assert f"Prometheus at {prometheus.url} is unreachable" in down.message, down.message
        assert "s3cret" not in down.message, "credentials leaked"
        assert "rollguard:" not in down.message, "credentials leaked"

        await prometheus.start()
        assert (await provider.measure(context())).phase is Phase.OK, "back when Prometheus is"


# ----- a small Prometheus API, counting requests -----

@dataclass
class FakePrometheusApi:
    """Speaks `/api/v1/query` well enough for the client; counts (query, time) pairs that reach it."""

    delay: float = 0.05
    value: str = "0.25"
    status: int = 200
    body: str | None = None
    requests: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    authorization: list[str | None] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests[(request.query["query"], request.query.get("time"))] += 1
        self.authorization.append(request.headers.get("Authorization"))
        await asyncio.sleep(self.delay)
        if self.body is not None:
            return web.Response(status=self.status, text=self.body, content_type="text/html")
        if self.status != 200:
            return web.json_response({"status": "error", "errorType": "unavailable", "error": "TSDB not ready"},
                                     status=self.status)
        sample = {"metric": {}, "value": [float(request.query.get("time", "0")), self.value]}
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [sample]}})

    @property
    def sent(self) -> int:
        return sum(self.requests.values())


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakePrometheusApi, str]]:
    fake = FakePrometheusApi()
    app = web.Application()
    app.router.add_get("/prefix/api/v1/query", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}/prefix"
    finally:
        await runner.cleanup()


async def test_a_thousand_analyses_sharing_a_query_send_it_once(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, clock=FakeClock(start=1_764_151_200.4))
        provider = PrometheusProvider(PrometheusSignal(ERROR_RATIO), client=client)
        readings = await asyncio.gather(*(provider.measure(context()) for _ in range(1000)))
    expected = Measurement(Phase.OK, 0.25, "query returned 0.25", details={"series": 1.0})
    assert all(r == expected for r in readings), f"every analysis gets the one answer: {readings[0]}"
    assert fake.sent == 1, fake.requests
    ((query, at),) = fake.requests
    assert 'namespace="staging"' in query
    assert 'pod=~"backend-new222-.*"' in query
    assert at == "1764151200.000", "a query for now is evaluated at the tick, explicitly"
    assert client.requests_sent == 1


async def test_identical_queries_are_one_request_per_tick_and_key(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    clock = FakeClock(start=1_764_151_200.0)
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, clock=clock, tick=15)
        provider = PrometheusProvider(PrometheusSignal(ERROR_RATIO), client=client)
        namespaces = ("staging", "production", "staging", "production")
        await asyncio.gather(*(provider.measure(context(namespace=ns)) for ns in namespaces))
        assert fake.sent == 2, f"one request per distinct rendered query: {fake.requests}"

        await provider.measure(context())
        assert fake.sent == 2, "an answer within the tick is reused"

        await clock.advance(15)
        await provider.measure(context())
        assert fake.sent == 3, "the next tick asks again"
        assert sorted(at for _, at in fake.requests) == ["1764151200.000", "1764151200.000", "1764151215.000"]

        await asyncio.gather(provider.measure_at(context(), 1_764_151_000),
                             provider.measure_at(context(), 1_764_151_000),
                             provider.measure_at(context(), 1_764_150_000))
        assert fake.sent == 5, "baselines coalesce on their own evaluation time"


async def test_failures_are_shared_by_waiters_but_never_reused(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    fake.status = 503
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, clock=FakeClock())
        provider = PrometheusProvider(PrometheusSignal("up"), client=client)
        first, second = await asyncio.gather(provider.measure(context()), provider.measure(context()))
        assert fake.sent == 1
        assert first == second
        assert first.phase is Phase.ERROR
        assert first.message == "Prometheus rejected the query (unavailable): TSDB not ready"

        fake.status = 200
        assert (await provider.measure(context())).phase is Phase.OK, "the error was not reused"
        assert fake.sent == 2


async def test_a_cancelled_caller_does_not_cancel_the_query_for_the_others(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    fake.delay = 0.2
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, clock=FakeClock())
        provider = PrometheusProvider(PrometheusSignal("up"), client=client)
        impatient = asyncio.create_task(provider.measure(context()))
        patient = asyncio.create_task(provider.measure(context()))
        await asyncio.sleep(0.05)
        impatient.cancel()
        assert (await patient).value == 0.25
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert fake.sent == 1

        # When every caller gives up, the request is abandoned and the next caller starts afresh.
        alone = asyncio.create_task(client.query("up", at=1.0))
        await asyncio.sleep(0.05)
        alone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await alone
        result = await client.query("up", at=1.0)
        assert result.samples[0].value == 0.25
        assert fake.requests[("up", "1.000")] == 2
        await client.aclose()


async def test_batched_queries_keep_the_coalescing_promises(api: tuple[FakePrometheusApi, str]) -> None:
    """With batching on, a query is a batch member awaited without a task of its own: still one request per
    query and tick, a cancelled caller never cancels it for the others, and a query every caller gave up
    on is still answered to whoever asks next."""
    fake, url = api
    fake.delay = 0.2
    clock = FakeClock(start=1_764_151_200.0)
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, clock=clock, tick=15,
                                  batcher=lambda send: QueryBatcher(send, linger=0.1))
        provider = PrometheusProvider(PrometheusSignal(ERROR_RATIO), client=client)
        impatient = asyncio.create_task(provider.measure(context()))
        patient = asyncio.create_task(provider.measure(context()))
        await asyncio.sleep(0.02)
        impatient.cancel()
        assert (await patient).value == 0.25
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert (await provider.measure(context())).value == 0.25, "an answer within the tick is reused"
        assert fake.sent == 1, fake.requests

        alone = asyncio.create_task(client.query("up", shape="up"))
        await asyncio.sleep(0.02)
        alone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await alone
        result = await client.query("up", shape="up")  # its batch is still open: the same member
        assert result.samples[0].value == 0.25
        assert fake.requests[("up", "1764151200.000")] == 1
        await client.aclose()


async def test_slow_and_foreign_answers_are_errors(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    async with aiohttp.ClientSession() as session:
        fake.delay = 0.5
        slow = PrometheusClient(url.replace("http://", "http://ops:hunter2@"), session, timeout=0.2, tick=0)
        measured = await PrometheusProvider(PrometheusSignal("up"), client=slow).measure(context())
        assert measured.phase is Phase.ERROR
        assert measured.message == f"Prometheus at {url} did not answer within 0.2s"
        assert (fake.authorization[-1] or "").startswith("Basic "), "user-info in the URL is sent as basic auth"
        await asyncio.sleep(fake.delay)  # let the abandoned request's handler finish before the server stops

        fake.delay, fake.status, fake.body = 0, 502, "<html>\n<h1>502 Bad Gateway</h1>\n</html>"
        client = PrometheusClient(url, session, tick=0)
        foreign = await PrometheusProvider(PrometheusSignal("up"), client=client).measure(context())
        assert foreign.phase is Phase.ERROR
        assert foreign.message == (f"Prometheus at {url} answered HTTP 502 that is not a Prometheus API response: "
                                   "<html> <h1>502 Bad Gateway</h1> </html>")


async def test_values_prometheus_spells_as_strings(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    async with aiohttp.ClientSession() as session:
        provider = PrometheusProvider(PrometheusSignal("x"), client=PrometheusClient(url, session, tick=0))
        for text, phase in (("NaN", Phase.INCONCLUSIVE), ("+Inf", Phase.INCONCLUSIVE), ("-Inf", Phase.INCONCLUSIVE),
                            ("1e-3", Phase.OK)):
            fake.value = text
            measured = await provider.measure(context())
            assert measured.phase is phase, (text, measured)
        assert measured.value == 0.001


async def test_a_template_that_cannot_be_rendered_is_an_error(api: tuple[FakePrometheusApi, str]) -> None:
    fake, url = api
    async with aiohttp.ClientSession() as session:
        provider = PrometheusProvider(PrometheusSignal('up{team="{{labels.team}}"}'),
                                      client=PrometheusClient(url, session))
        measured = await provider.measure(context())
    assert measured.phase is Phase.ERROR
    assert measured.message == "cannot render the query: {{labels.team}} has no value: the pod template has no " \
                               "label 'team'"
    assert fake.sent == 0


async def test_the_coalescer_on_its_own() -> None:
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    coalescer: QueryCoalescer[str, int] = QueryCoalescer(reuse_for=0)
    assert await asyncio.gather(*(coalescer.run("k", fetch) for _ in range(5))) == [1] * 5
    assert coalescer.in_flight == 0
    assert await coalescer.run("k", fetch) == 2, "without reuse, a finished answer is not handed out again"


async def test_each_revision_gets_its_own_rendered_query_however_often_it_is_measured(
        api: tuple[FakePrometheusApi, str]) -> None:
    """A provider keeps each revision's rendered query (rendering is most of a tick's cost): measured again,
    a revision asks the same query; another revision asks its own; a context that cannot be rendered
    stays an error and is never mistaken for another's query."""
    fake, url = api
    clock = FakeClock(start=1_764_151_200.0)
    async with aiohttp.ClientSession() as session:
        provider = PrometheusProvider(PrometheusSignal('up{team="{{labels.team}}",pod=~"{{podPrefix}}.*"}'),
                                      client=PrometheusClient(url, session, clock=clock))
        unlabelled = await provider.measure(context())
        teams = [{"app": "backend", "team": "shop"}, {"app": "backend", "team": "pay"}]
        for _ in range(2):
            for hash_, labels in (("new222", teams[0]), ("new333", teams[1]), ("new222", teams[0])):
                ctx = SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash=hash_,
                                    pod_prefix=f"backend-{hash_}-", labels=labels, rollout_started_at=0.0)
                assert (await provider.measure(ctx)).phase is Phase.OK
            await clock.advance(1)
        again = await provider.measure(context())
    assert unlabelled.phase is Phase.ERROR
    assert again == unlabelled, "a template error is not remembered as a query"
    assert sorted(fake.requests) == [('up{team="pay",pod=~"backend-new333-.*"}', "1764151200.000"),
                                     ('up{team="pay",pod=~"backend-new333-.*"}', "1764151201.000"),
                                     ('up{team="shop",pod=~"backend-new222-.*"}', "1764151200.000"),
                                     ('up{team="shop",pod=~"backend-new222-.*"}', "1764151201.000")]
