"""The simulated workload: computed metrics, kubelet-like logs, and who a pod is."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.clock import FakeClock
from sim.resources import PODS
from sim.store import ApiError, Store, rfc3339
from sim.workload import LATENCY_BUCKETS, WorkloadLogs, pod_identity, render_metrics
from tests.promkit import make_pod, pod_object

T0 = 1_764_151_200.0  # 2025-11-26T10:00:00Z
ERROR_PATTERN = re.compile(r"(?i)\b(error|traceback)\b")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels), parsed by prometheus_client."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests(text: str, code: str) -> float:
    return samples(text)[("http_requests_total",
                          (("code", code), ("method", "GET"), ("route", "/api/items")))]


def bucket_counts(text: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of the latency histogram, +Inf last."""
    found = [(float(dict(labels)["le"]), value) for (name, labels), value in samples(text).items()
             if name == "http_request_duration_seconds_bucket"]
    return sorted(found)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q × count."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    raise AssertionError("rank beyond +Inf")


def running_pod(env: dict[str, str] | None = None, **kwargs: object) -> dict[str, object]:
    return pod_object("staging", "backend-5d8f7c9b4-abcde", env=env, started=T0, **kwargs)  # type: ignore[arg-type]


# ----- identity -----

def test_the_deployment_comes_from_the_replicaset_owner_minus_the_template_hash() -> None:
    who = pod_identity(running_pod())
    assert (who.namespace, who.pod, who.deployment, who.pod_template_hash) == \
        ("staging", "backend-5d8f7c9b4-abcde", "backend", "5d8f7c9b4")


def test_a_pod_without_a_replicaset_owner_is_named_by_its_app_label() -> None:
    pod = running_pod()
    pod["metadata"]["ownerReferences"] = []  # type: ignore[index]
    pod["metadata"]["labels"] = {"app": "worker"}  # type: ignore[index]
    assert pod_identity(pod).deployment == "worker"


# ----- metrics -----

def test_metrics_parse_and_count_requests_and_errors_exactly() -> None:
    text = render_metrics(running_pod({"SIM_RPS": "20", "SIM_ERROR_RATIO": "0.12"}), T0 + 100)
    assert requests(text, "500") == 240.0, text
    assert requests(text, "200") == 2000.0 - 240.0
    values = samples(text)
    key = (("method", "GET"), ("route", "/api/items"))
    assert values[("http_request_duration_seconds_count", key)] == 2000.0
    assert values[("http_request_duration_seconds_sum", key)] == pytest.approx(2000 * 0.05)
    assert values[("process_start_time_seconds", ())] == T0
    buckets = bucket_counts(text)
    assert [b for b, _ in buckets] == [*LATENCY_BUCKETS, float("inf")]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"cumulative buckets must not decrease: {counts}"
    assert counts[-1] == 2000.0


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.12, 1 / 3, 0.5, 1.0])
def test_the_error_share_of_every_window_is_the_error_ratio(ratio: float) -> None:
    pod = running_pod({"SIM_RPS": "7", "SIM_ERROR_RATIO": str(ratio)})
    previous = (0.0, 0.0)
    for step in range(1, 40):
        text = render_metrics(pod, T0 + step * 3.7)
        total = requests(text, "200") + requests(text, "500")
        errors = requests(text, "500")
        assert total >= previous[0], "counters must never decrease"
        assert errors >= previous[1], "counters must never decrease"
        window_total, window_errors = total - previous[0], errors - previous[1]
        # floor() at both ends of a window: at most one request off.
        assert abs(window_errors - ratio * window_total) <= 1.0, (step, window_errors, window_total)
        previous = (total, errors)
    assert previous[1] / previous[0] == pytest.approx(ratio, abs=1 / previous[0])


def test_p95_latency_follows_the_configured_latency() -> None:
    fast = bucket_counts(render_metrics(running_pod({"SIM_LATENCY_MS": "100"}), T0 + 600))
    slow = bucket_counts(render_metrics(running_pod({"SIM_LATENCY_MS": "180"}), T0 + 600))
    p95_fast, p95_slow = histogram_quantile(0.95, fast), histogram_quantile(0.95, slow)
    assert 0.15 < p95_fast < 0.3, p95_fast
    assert 1.6 < p95_slow / p95_fast < 2.1, (p95_fast, p95_slow)
    assert histogram_quantile(0.5, slow) > histogram_quantile(0.5, fast)


def test_a_pod_that_is_not_running_has_no_metrics() -> None:
    assert render_metrics(pod_object("staging", "backend-x", started=None), T0 + 10) == ""


def test_a_restarted_container_starts_its_counters_again() -> None:
    pod = running_pod()
    before = requests(render_metrics(pod, T0 + 100), "200")
    pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = rfc3339(T0 + 90)  # type: ignore[index]
    assert requests(render_metrics(pod, T0 + 100), "200") < before


def test_identity_labels_are_added_on_request() -> None:
    text = render_metrics(running_pod(), T0 + 10, identity_labels=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            identity = (s.labels["namespace"], s.labels["pod"], s.labels["deployment"])
            assert identity == ("staging", "backend-5d8f7c9b4-abcde", "backend"), s


# ----- logs -----

@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(clock)


@pytest.fixture
def logs(store: Store, clock: FakeClock) -> WorkloadLogs:
    return WorkloadLogs(store, clock)


NOISY = {"SIM_LOG_RATE": "2", "SIM_LOG_ERROR_RATIO": "0.25", "SIM_LATENCY_MS": "40"}


async def test_lines_are_written_at_the_log_rate_with_the_error_share(store: Store, clock: FakeClock,
                                                                       logs: WorkloadLogs) -> None:
    make_pod(store, "staging", "web-1", env=NOISY, started=T0)
    await clock.advance(10)
    lines = logs.read("staging", "web-1", "app")
    assert len(lines) == 21, "one line at the start, then 2 per second for 10 s"
    assert lines[0].startswith("2025-11-26T10:00:00.000Z INFO GET /api/items 200 "), lines[0]
    assert lines[1].startswith("2025-11-26T10:00:00.500Z "), lines[1]
    assert re.fullmatch(r"\S+ INFO GET /api/items 200 \d+ms", lines[0]), lines[0]
    matching = [line for line in lines if ERROR_PATTERN.search(line)]
    assert len(matching) == 5, "exactly floor(21 × 0.25) lines match the error pattern, each once"
    assert all(" ERROR " in line and "Traceback (most recent call last)" in line for line in matching)
    assert logs.read("staging", "web-1", "app") == lines, "the log is deterministic"


async def test_tail_since_and_timestamps_behave_like_kubectl_logs(store: Store, clock: FakeClock,
                                                                  logs: WorkloadLogs) -> None:
    make_pod(store, "staging", "web-1", env=NOISY, started=T0)
    await clock.advance(10)
    everything = logs.read("staging", "web-1", "app")
    assert logs.read("staging", "web-1", "app", tail_lines=3) == everything[-3:]
    assert logs.read("staging", "web-1", "app", tail_lines=0) == []
    assert logs.read("staging", "web-1", "app", tail_lines=500) == everything
    # Lines stamped at or after now - 2 s: those at +8.0, +8.5, ... +10.0.
    assert logs.read("staging", "web-1", "app", since_seconds=2) == everything[-5:]
    assert logs.read("staging", "web-1", "app", since_time=T0 + 9.2) == everything[-2:]
    assert logs.read("staging", "web-1", "app", since_seconds=2, tail_lines=1) == everything[-1:]
    stamped = logs.read("staging", "web-1", "app", timestamps=True, tail_lines=1)
    assert stamped == [f"2025-11-26T10:00:10.000000000Z {everything[-1]}"]


async def test_log_errors_match_the_api_server(store: Store, logs: WorkloadLogs) -> None:
    make_pod(store, "staging", "web-1", started=T0)
    make_pod(store, "staging", "two-containers", started=T0, containers=("app", "sidecar"))
    make_pod(store, "staging", "pending", started=None)
    cases = [
        (("staging", "nope", "app"), {}, 404, 'pods "nope" not found'),
        (("staging", "web-1", "db"), {}, 400, "container db is not valid for pod web-1"),
        (("staging", "two-containers", ""), {}, 400,
         "a container name must be specified for pod two-containers, choose one of: [app sidecar]"),
        (("staging", "pending", "app"), {}, 400,
         'container "app" in pod "pending" is waiting to start: ContainerCreating'),
        (("staging", "web-1", "app"), {"since_seconds": 1, "since_time": T0}, 400,
         "at most one of sinceTime or sinceSeconds may be specified"),
    ]
    for args, kwargs, code, message in cases:
        with pytest.raises(ApiError) as err:
            logs.read(*args, **kwargs)  # type: ignore[arg-type]
        assert (err.value.code, err.value.message) == (code, message), args
    assert logs.read("staging", "web-1", "") == logs.read("staging", "web-1", "app"), "the only container"
    with pytest.raises(ApiError) as err:
        logs.follow("staging", "nope", "app")
    assert err.value.code == 404, "follow refuses before the first line, so the server can answer 404"


async def test_a_terminated_container_keeps_its_log_until_it_finished(store: Store, clock: FakeClock,
                                                                      logs: WorkloadLogs) -> None:
    pod = make_pod(store, "jobs", "migrate-xyz", started=T0)
    pod["status"]["phase"] = "Succeeded"
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 0, "startedAt": rfc3339(T0), "finishedAt": rfc3339(T0 + 3)}}
    store.replace(PODS, pod, namespace="jobs", name="migrate-xyz")
    await clock.advance(60)
    assert len(logs.read("jobs", "migrate-xyz", "app")) == 4


async def test_only_the_newest_lines_are_kept(store: Store, clock: FakeClock) -> None:
    logs = WorkloadLogs(store, clock, max_lines=10)
    make_pod(store, "staging", "chatty", env={"SIM_LOG_RATE": "100"}, started=T0)
    await clock.advance(3600)
    lines = logs.read("staging", "chatty", "app", timestamps=True)
    assert len(lines) == 10
    assert lines[-1].startswith("2025-11-26T11:00:00.000000000Z "), lines[-1]


async def test_follow_yields_new_lines_as_time_passes_and_ends_when_the_pod_is_deleted(
        store: Store, clock: FakeClock, logs: WorkloadLogs) -> None:
    make_pod(store, "staging", "web-1", started=T0)  # one line per second
    await clock.advance(5)
    stream = logs.follow("staging", "web-1", "app", tail_lines=2, timestamps=True)
    received = [await anext(stream), await anext(stream)]
    assert [line[:20] for line in received] == ["2025-11-26T10:00:04.", "2025-11-26T10:00:05."]

    waiting = asyncio.ensure_future(anext(stream))
    await clock.advance(0.5)
    assert not waiting.done(), "no line is due at +5.5 s"
    await clock.advance(0.5)
    assert (await waiting)[:20] == "2025-11-26T10:00:06."

    await clock.advance(2)
    assert [(await anext(stream))[:20] for _ in range(2)] == ["2025-11-26T10:00:07.", "2025-11-26T10:00:08."]

    ending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    store.delete(PODS, "staging", "web-1")
    with pytest.raises(StopAsyncIteration):
        await ending


async def test_follow_ends_when_the_container_terminates(store: Store, clock: FakeClock,
                                                         logs: WorkloadLogs) -> None:
    make_pod(store, "staging", "web-1", started=T0)
    stream = logs.follow("staging", "web-1", "app")
    assert (await anext(stream)).startswith("2025-11-26T10:00:00.000Z")
    ending = asyncio.ensure_future(_drain(stream))
    await clock.advance(2.5)
    pod = store.get(PODS, "staging", "web-1")
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 1, "startedAt": rfc3339(T0), "finishedAt": rfc3339(T0 + 2)}}
    store.replace(PODS, pod, namespace="staging", name="web-1")
    rest = await ending
    assert [line[:19] for line in rest] == ["2025-11-26T10:00:01", "2025-11-26T10:00:02"]


async def _drain(stream: AsyncIterator[str]) -> list[str]:
    return [line async for line in stream]
