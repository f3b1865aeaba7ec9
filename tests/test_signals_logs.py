"""Pod-log signals through the simulated API server over real HTTP, read with the daemon's own KubeClient.

The simulated pods' logs are computed from the cluster clock (a `FakeClock` here): line i of a container
that started at S is stamped S + i/SIM_LOG_RATE, and with SIM_LOG_ERROR_RATIO=0.25 exactly the lines
i ≡ 3 (mod 4) are errors (`sim.workload`). So the expected counts below are worked out by hand.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from daemon.clock import FakeClock
from daemon.kube.client import KubeClient
from daemon.rules.model import LogsSignal
from daemon.signals.base import Phase, SignalContext
from daemon.signals.logs import LogsProvider, parse_kubelet_time
from sim.apiserver import build_app
from sim.resources import PODS
from sim.store import Store
from sim.workload import WorkloadLogs
from tests.promkit import make_pod

T0 = 1_764_151_200.0
ERRORS = LogsSignal(r"(?i)\b(error|traceback)\b")
QUARTER = {"SIM_LOG_ERROR_RATIO": "0.25"}


@dataclass
class Cluster:
    store: Store
    clock: FakeClock
    kube: KubeClient
    runner: web.AppRunner
    log_queries: list[dict[str, str]] = field(default_factory=list)
    """Query parameters of every `pods/{name}/log` request that reached the API server."""


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = FakeClock(start=T0)
    store = Store(clock)
    app = build_app(store, logs=WorkloadLogs(store, clock))
    queries: list[dict[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if request.path.endswith("/log"):
            queries.append(dict(request.query))
        return await handler(request)

    app.middlewares.append(record)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    configuration = k8s_client.Configuration(host=f"http://127.0.0.1:{runner.addresses[0][1]}")
    kube = KubeClient(k8s_client.ApiClient(configuration=configuration), timeout=5)
    try:
        yield Cluster(store, clock, kube, runner, queries)
    finally:
        await kube.close()
        await runner.cleanup()


def context(*, started: float, template_hash: str = "new222", namespace: str = "staging") -> SignalContext:
    return SignalContext(namespace=namespace, deployment="backend", revision=2, pod_template_hash=template_hash,
                         pod_prefix=f"backend-{template_hash}-", labels={"app": "backend"}, rollout_started_at=started)


def new_pod(cluster: Cluster, suffix: str, *, started: float | None = T0 - 100, **kwargs: object) -> None:
    make_pod(cluster.store, "staging", f"backend-new222-{suffix}", template_hash="new222", started=started,
             **kwargs)  # type: ignore[arg-type]


async def test_counts_matching_lines_of_the_new_pods_since_the_rollout_started(cluster: Cluster) -> None:
    new_pod(cluster, "aaaaa", env=QUARTER)
    new_pod(cluster, "bbbbb", env=QUARTER)
    # Not ours: the old ReplicaSet, and a pod of another Deployment that happens to share the hash.
    make_pod(cluster.store, "staging", "backend-old111-aaaaa", template_hash="old111", env={"SIM_LOG_ERROR_RATIO": "1"},
             started=T0 - 100)
    make_pod(cluster.store, "staging", "other-new222-aaaaa", deployment="other", template_hash="new222",
             env={"SIM_LOG_ERROR_RATIO": "1"}, started=T0 - 100)

    measured = await LogsProvider(ERRORS, kube=cluster.kube).measure(context(started=T0 - 40))

    # Lines 60..100 of each container are stamped in [T0-40, T0]; of those, 63, 67, …, 99 are errors: 10.
    assert measured.phase is Phase.OK, measured
    assert measured.value == 20.0
    assert measured.details == {"pod/backend-new222-aaaaa": 10.0, "pod/backend-new222-bbbbb": 10.0, "total": 20.0}
    assert measured.message == "20 matching log lines in 2 pods since the rollout started"
    assert len(measured.evidence) == 3
    for line in measured.evidence:
        assert re.match(r"backend-new222-(aaaaa|bbbbb): \S+Z ERROR GET /api/items 500", line), line
        assert len(line) <= 200, line
    assert all(q.get("sinceTime") == "2025-11-26T09:59:20Z" for q in cluster.log_queries), cluster.log_queries


async def test_the_rollout_start_is_the_boundary(cluster: Cluster) -> None:
    new_pod(cluster, "aaaaa", env=QUARTER)
    provider = LogsProvider(ERRORS, kube=cluster.kube)
    # Line 63 (an error) is stamped exactly T0-37: a rollout starting then counts it, a moment later does not.
    at_error = await provider.measure(context(started=T0 - 37))
    just_after = await provider.measure(context(started=T0 - 36.999))
    assert (at_error.value, just_after.value) == (10.0, 9.0), (at_error, just_after)


async def test_later_ticks_read_only_new_lines_and_count_each_line_once(cluster: Cluster) -> None:
    # Ten lines a second, 30% errors: several lines (and errors) per second, so reads resume mid-second.
    busy = {"SIM_LOG_RATE": "10", "SIM_LOG_ERROR_RATIO": "0.3"}
    new_pod(cluster, "aaaaa", env=busy)
    new_pod(cluster, "bbbbb", env=busy, started=T0 - 3.35)
    ctx = context(started=T0 - 12.25)
    incremental = LogsProvider(ERRORS, kube=cluster.kube)
    previous = 0.0
    for step in (0.0, 0.37, 0.37, 1.0, 0.05, 2.6, 0.0, 10.0):
        await cluster.clock.advance(step)
        cluster.log_queries.clear()
        counted = await incremental.measure(ctx)
        incremental_since = sorted(q["sinceTime"] for q in cluster.log_queries)
        cluster.log_queries.clear()
        from_scratch = await LogsProvider(ERRORS, kube=cluster.kube).measure(ctx)
        scratch_since = sorted(q["sinceTime"] for q in cluster.log_queries)
        assert counted.phase is Phase.OK, counted
        assert counted.details == from_scratch.details, f"after {step}s: incremental and full reads disagree"
        assert isinstance(counted.value, float)
        assert counted.value >= previous
        previous = counted.value
    assert previous > 30
    # The last incremental read resumed at the second of the last line counted before (T0+4.3 s); a fresh one
    # read from the rollout start.
    assert incremental_since == ["2025-11-26T10:00:04Z"] * 2, incremental_since
    assert scratch_since == ["2025-11-26T09:59:47Z"] * 2, scratch_since


async def test_pods_not_yet_running_are_skipped_and_named(cluster: Cluster) -> None:
    provider = LogsProvider(ERRORS, kube=cluster.kube)
    nothing = await provider.measure(context(started=T0 - 40))
    assert (nothing.phase, nothing.value) == (Phase.PENDING, None), "no log line can exist yet"
    assert nothing.message == "no pods of ReplicaSet staging/backend-new222 yet"

    new_pod(cluster, "pending", started=None)
    waiting = await provider.measure(context(started=T0 - 40))
    assert waiting.phase is Phase.PENDING, "no log line can exist yet"
    assert waiting.message == ("no container of ReplicaSet staging/backend-new222 has started yet; skipped: "
                               "backend-new222-pending (waiting to start)")

    new_pod(cluster, "aaaaa", env=QUARTER)
    some = await provider.measure(context(started=T0 - 40))
    assert (some.phase, some.value) == (Phase.OK, 10.0)
    assert some.message == ("10 matching log lines in 1 pod since the rollout started; skipped: "
                            "backend-new222-pending (waiting to start)")


async def test_a_container_waiting_to_start_is_skipped_when_the_api_says_so(cluster: Cluster) -> None:
    # Running per its phase, but the API server still answers 400 "waiting to start" for the container.
    new_pod(cluster, "aaaaa", env=QUARTER)
    pod = cluster.store.get(PODS, "staging", "backend-new222-aaaaa")
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    cluster.store.replace(PODS, pod, namespace="staging", name="backend-new222-aaaaa")
    new_pod(cluster, "bbbbb", env=QUARTER)
    measured = await LogsProvider(ERRORS, kube=cluster.kube).measure(context(started=T0 - 40))
    assert (measured.phase, measured.value) == (Phase.OK, 10.0)
    assert measured.message.endswith("; skipped: backend-new222-aaaaa (waiting to start)"), measured.message


async def test_counts_of_pods_that_went_away_still_count(cluster: Cluster) -> None:
    new_pod(cluster, "aaaaa", env=QUARTER)
    new_pod(cluster, "bbbbb", env=QUARTER)
    provider = LogsProvider(ERRORS, kube=cluster.kube)
    assert (await provider.measure(context(started=T0 - 40))).value == 20.0
    cluster.store.delete(PODS, "staging", "backend-new222-bbbbb")
    await cluster.clock.advance(4)  # one more error line (103) in the remaining pod
    measured = await provider.measure(context(started=T0 - 40))
    assert measured.details == {"pod/backend-new222-aaaaa": 11.0, "pod/backend-new222-bbbbb": 10.0, "total": 21.0}


async def test_a_named_container_of_a_multi_container_pod(cluster: Cluster) -> None:
    new_pod(cluster, "aaaaa", env=QUARTER, containers=("app", "proxy"))
    every = await LogsProvider(ERRORS, kube=cluster.kube).measure(context(started=T0 - 40))
    assert every.value == 20.0, "no container named: every container of the pod (both log the same here)"
    one = await LogsProvider(LogsSignal(ERRORS.pattern, "proxy"), kube=cluster.kube).measure(context(started=T0 - 40))
    assert one.value == 10.0
    wrong = await LogsProvider(LogsSignal(ERRORS.pattern, "sidecar"), kube=cluster.kube).measure(
        context(started=T0 - 40))
    assert wrong.phase is Phase.ERROR, "a container the pod lacks is a broken rule, not a clean log"
    assert "container sidecar is not valid for pod backend-new222-aaaaa" in wrong.message


async def test_an_unreachable_api_server_is_an_error(cluster: Cluster) -> None:
    new_pod(cluster, "aaaaa", env=QUARTER)
    provider = LogsProvider(ERRORS, kube=cluster.kube)
    assert (await provider.measure(context(started=T0 - 40))).phase is Phase.OK
    await cluster.runner.cleanup()
    down = await provider.measure(context(started=T0 - 40))
    assert (down.phase, down.value) == (Phase.ERROR, None), down
    assert down.message.startswith("cannot list the pods of staging/backend-new222: GET /api/v1/namespaces/staging/"
                                   "pods: ClientConnectorError"), down.message


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2025-11-26T10:00:00.123456789Z", 1_764_151_200_123_456_789),
    ("2025-11-26T10:00:00.5Z", 1_764_151_200_500_000_000),
    ("2025-11-26T10:00:00Z", 1_764_151_200_000_000_000),
    ("2025-11-26T12:00:00.000000001+02:00", 1_764_151_200_000_000_001),
    ("INFO", None),
    ("2025-11-26T10:00:00", None),
])
def test_kubelet_timestamps_are_read_to_the_nanosecond(stamp: str, expected: int | None) -> None:
    assert parse_kubelet_time(stamp) == expected


def _rss() -> int:
    """This process's resident memory, bytes (VmRSS)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


async def test_memory_stays_bounded_while_the_new_pods_flood_their_logs(cluster: Cluster) -> None:
    """Three pods writing 2,000 lines a second for a (simulated) minute, read every 5 s: what the
    provider keeps does not grow with what the workload writes (bounded reads, no retained lines)."""
    for suffix in ("aaaaa", "bbbbb", "ccccc"):
        new_pod(cluster, suffix, started=T0, env={"SIM_LOG_RATE": "2000", "SIM_LOG_ERROR_RATIO": "0.5"})
    provider = LogsProvider(ERRORS, kube=cluster.kube)
    held: list[int] = []
    for _ in range(12):
        await cluster.clock.advance(5)
        measured = await provider.measure(context(started=T0))
        assert measured.phase is Phase.OK, measured
        held.append(_rss())
    assert measured.value is not None
    assert measured.value > 150_000, measured  # the flood was read, not skipped
    growth = max(held[3:]) - held[2]
    assert growth < 32 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over the flood: {held}"
