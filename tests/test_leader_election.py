"""Leader election on a coordination.k8s.io Lease, against the simulated API server over real HTTP.

Part one drives `LeaderElector`s directly with a `FakeClock`, so "not before the lease expires" is
checked to the second without sleeping. A replica is "hard-killed" (SIGKILL, node lost) by closing
its own front door to the API server — a second HTTP server over the same Store — and then
cancelling it: it can neither renew nor release, exactly what the other replicas see of a dead pod.

Part two runs two whole daemons against one stack (cluster, Prometheus, Slack, PagerDuty) and
checks what people would see: one rollback, one incident, one "Rolled back" message per bad deploy,
also when the leader dies in the middle of an analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.clock import FakeClock
from daemon.kube.client import KubeClient
from daemon.kube.leader import LeaderElector, LeaseConfig
from sim.demo.manifests import backend_service
from sim.demo.stack import Stack, running_stack
from sim.resources import EVENTS, LEASES
from sim.store import Store
from sim.workload import WorkloadLogs
from tests import waiting
from tests.e2ekit import RULES, deploy, image_of, revision_of, rollout_status, state_of
from tests.replicakit import LEASE_SECONDS, FrontDoor, Replica, holder, kill, replica
from tests.simkit import sim_server

LEASE = "rollguard"
pytestmark = pytest.mark.serial  # lease timing: these run alone

NAMESPACE = "default"
# Fake-clock seconds: client-go's ratios (15 / 10 / 2), shrunk.
DURATION, DEADLINE, RETRY = 15.0, 10.0, 1.0
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# --- helpers ---------------------------------------------------------------------------------------------
class CountingClock(FakeClock):
    """A FakeClock that knows how many tasks are waiting on it (each elector waits once per round)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def sleep(self, seconds: float) -> None:
        self.waiting += 1
        try:
            await super().sleep(seconds)
        finally:
            self.waiting -= 1


async def settle(clock: CountingClock, sleepers: int) -> None:
    """Wait (real time) until `sleepers` electors have finished their HTTP round and wait on the clock again."""
    deadline = time.monotonic() + 5
    while clock.waiting < sleepers:
        assert time.monotonic() < deadline, (
            f"only {clock.waiting} of {sleepers} electors came back to wait on the clock: one is stuck in a request")
        await asyncio.sleep(0.005)


async def run_for(clock: CountingClock, seconds: float, *, sleepers: int, step: float = RETRY / 2) -> None:
    """Let `seconds` of fake time pass in small steps, each electors' round completing before the next."""
    target = clock.now() + seconds
    while clock.now() < target - 1e-9:
        await clock.advance(min(step, target - clock.now()))
        await asyncio.sleep(0.01)  # let a woken elector start its request before we count sleepers
        await settle(clock, sleepers)


def lease_spec(store: Store) -> dict[str, Any]:
    lease = store.peek(LEASES, NAMESPACE, LEASE)
    assert lease is not None, "the Lease was never created"
    spec: dict[str, Any] = lease["spec"]
    return spec


@contextlib.asynccontextmanager
async def electing(client: KubeClient, identity: str, clock: CountingClock) -> AsyncIterator[
        tuple[LeaderElector, asyncio.Task[None]]]:
    elector = LeaderElector(client, LeaseConfig(LEASE, NAMESPACE, identity, lease_duration=DURATION,
                                                renew_deadline=DEADLINE, retry_period=RETRY), clock=clock)
    task = asyncio.create_task(elector.run(), name=f"elector-{identity}")
    try:
        yield elector, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def leaders(*electors: LeaderElector) -> list[str]:
    return [e.config.identity for e in electors if e.is_leader]


# --- part one: the elector against the API server --------------------------------------------------------
async def test_two_electors_elect_exactly_one_and_the_lease_records_it(tmp_path: Path) -> None:
    clock = CountingClock()
    async with sim_server(tmp_path) as sim, await KubeClient.connect(sim.kubeconfig) as client:
        async with electing(client, "replica-a", clock) as (a, _), electing(client, "replica-b", clock) as (b, _):
            await settle(clock, 2)
            await run_for(clock, 3 * DURATION, sleepers=2)
            assert len(leaders(a, b)) == 1, f"leaders: {leaders(a, b)}"
            leader = a if a.is_leader else b
            spec = lease_spec(sim.store)
            assert spec["holderIdentity"] == leader.config.identity
            assert spec["leaseDurationSeconds"] == int(DURATION)
            assert spec["leaseTransitions"] == 0, "nobody took over: the creator has held it throughout"
            assert MICRO_TIME.match(spec["renewTime"]), spec["renewTime"]
            assert MICRO_TIME.match(spec["acquireTime"]), spec["acquireTime"]
            renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00")).timestamp()
            assert clock.now() - RETRY - 1e-3 <= renewed <= clock.now(), "the leader renews every retry period"
            assert (a.transitions, b.transitions) in ((1, 0), (0, 1))
        # Both stopped gracefully: the leader released the Lease on its way out.
        assert lease_spec(sim.store)["holderIdentity"] == ""




def renew_time(store: Store) -> float:
    return datetime.fromisoformat(lease_spec(store)["renewTime"].replace("Z", "+00:00")).timestamp()


async def first_time(clock: CountingClock, condition: Callable[[], bool], *, within: float, sleepers: int,
                     check: Callable[[], None] = lambda: None) -> float | None:
    """Step fake time until `condition()`; the fake time it first held (None if not within `within`).

    `check()` runs after every step (an invariant such as "never two leaders")."""
    end = clock.now() + within
    while clock.now() < end:
        await run_for(clock, RETRY / 2, sleepers=sleepers)
        check()
        if condition():
            return clock.now()
    return None


def lease_config(identity: str) -> LeaseConfig:
    return LeaseConfig(LEASE, NAMESPACE, identity, lease_duration=DURATION, renew_deadline=DEADLINE,
                       retry_period=RETRY)


async def test_a_hard_killed_leader_is_replaced_only_after_its_lease_expires(tmp_path: Path) -> None:
    clock = CountingClock()
    async with sim_server(tmp_path) as sim, await KubeClient.connect(sim.kubeconfig) as b_client, \
            FrontDoor(sim.store, tmp_path) as a_door, await KubeClient.connect(a_door.kubeconfig) as a_client:
        a = LeaderElector(a_client, lease_config("replica-a"), clock=clock)
        a_task = asyncio.create_task(a.run(), name="elector-replica-a")
        try:
            await settle(clock, 1)
            assert a.is_leader, "alone, replica-a creates the Lease and leads"
            async with electing(b_client, "replica-b", clock) as (b, _):
                await run_for(clock, 2 * DURATION, sleepers=2)
                assert leaders(a, b) == ["replica-a"], "a renews in time: b must not take over"
                # SIGKILL: a's network path goes away and its task with it — no chance to release.
                await a_door.close()
                a_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await a_task
                assert lease_spec(sim.store)["holderIdentity"] == "replica-a", "a killed replica releases nothing"
                last_renew = renew_time(sim.store)

                took_over = await first_time(clock, lambda: b.is_leader, within=DURATION + 4 * RETRY, sleepers=1)
                assert took_over is not None, "b never took over the expired Lease"
                assert took_over >= last_renew + DURATION, (
                    f"b took over {last_renew + DURATION - took_over:.1f}s before a's lease expired")
                assert took_over <= last_renew + DURATION + 2.5 * RETRY, (
                    f"b took over {took_over - last_renew - DURATION:.1f}s after a's lease expired")
                spec = lease_spec(sim.store)
                assert spec["holderIdentity"] == "replica-b"
                assert spec["leaseTransitions"] == 1
                assert spec["acquireTime"] == spec["renewTime"], "acquired now, not inherited from a"
                assert b.transitions == 1
        finally:
            a_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await a_task


async def test_a_graceful_stop_releases_the_lease_so_the_successor_takes_over_at_once(tmp_path: Path) -> None:
    clock = CountingClock()
    async with sim_server(tmp_path) as sim, await KubeClient.connect(sim.kubeconfig) as client:
        a = LeaderElector(client, lease_config("replica-a"), clock=clock)
        a_task = asyncio.create_task(a.run(), name="elector-replica-a")
        try:
            await settle(clock, 1)
            async with electing(client, "replica-b", clock) as (b, _):
                await run_for(clock, DURATION, sleepers=2)
                assert leaders(a, b) == ["replica-a"]
                a_task.cancel()  # what run_guarded does on SIGTERM
                with contextlib.suppress(asyncio.CancelledError):
                    await a_task
                assert not a.is_leader
                assert lease_spec(sim.store)["holderIdentity"] == "", "a graceful stop releases the Lease"
                released_at = clock.now()
                took_over = await first_time(clock, lambda: b.is_leader, within=DURATION, sleepers=1)
                assert took_over is not None, "b did not take over the released Lease"
                assert took_over - released_at <= RETRY, (
                    f"b took over {took_over - released_at}s after the release; expected within one retry period")
                spec = lease_spec(sim.store)
                assert spec["holderIdentity"] == "replica-b"
                assert spec["leaseDurationSeconds"] == int(DURATION)
                assert spec["leaseTransitions"] == 1, "a hand-over after a release is a transition (client-go)"
        finally:
            a_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await a_task


@pytest.mark.parametrize("failure", ["refused", "hangs"])
async def test_a_leader_cut_off_from_the_api_stops_leading_before_anyone_can_take_over(
        tmp_path: Path, failure: str) -> None:
    """The API refuses a's connections, or accepts its requests and never answers (a black hole).

    Either way a stops acting by its renew deadline, b takes over only once the lease expired, and
    at no moment do both lead.
    """
    clock = CountingClock()
    async with sim_server(tmp_path) as sim, await KubeClient.connect(sim.kubeconfig) as b_client, \
            FrontDoor(sim.store, tmp_path) as a_door, await KubeClient.connect(a_door.kubeconfig) as a_client, \
            electing(a_client, "replica-a", clock) as (a, _):
        await settle(clock, 1)
        async with electing(b_client, "replica-b", clock) as (b, _):
            await run_for(clock, DURATION, sleepers=2)
            assert leaders(a, b) == ["replica-a"]
            if failure == "refused":
                await a_door.close()
            else:
                a_door.freeze()
            last_renew = renew_time(sim.store)

            def never_two() -> None:
                assert len(leaders(a, b)) <= 1, f"two leaders at {clock.now() - last_renew:.1f}s after a's renewal"

            a_stopped = await first_time(clock, lambda: not a.is_leader, within=DURATION, sleepers=2,
                                         check=never_two)
            assert a_stopped is not None, "a kept leading without renewing"
            assert last_renew + DEADLINE - RETRY <= a_stopped <= last_renew + DEADLINE + RETRY, (
                f"a stopped leading {a_stopped - last_renew:.1f}s after its last renewal; "
                f"its renew deadline is {DEADLINE}s")
            # A follower's request may hang (harmless: it acts on nothing); only b is stepped now.
            took_over = await first_time(clock, lambda: b.is_leader, within=DURATION,
                                         sleepers=1 if failure == "hangs" else 2, check=never_two)
            assert took_over is not None, "b never took over"
            assert took_over >= last_renew + DURATION, "b took over before a's lease expired"
            assert lease_spec(sim.store)["leaseTransitions"] == 1
            if failure == "hangs":
                await a_door.close()  # let a's abandoned request end before the electors stop


# --- part two: two whole daemons against one stack ----------------------------------------------------------
def rollguard_events(stack: Stack, reason: str) -> list[dict[str, Any]]:
    events = stack.cluster.store.list_objects(EVENTS, "staging")[0]
    return [e for e in events if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == "backend"]


def alive(*replicas: Replica) -> Callable[[], None]:
    def check() -> None:
        for r in replicas:
            if r.task.done() and not r.task.cancelled() and r.task.exception() is not None:
                raise AssertionError(f"daemon {r.identity} died: {r.task.exception()!r}")
    return check


async def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, replicas: tuple[Replica, ...] = ()
                   ) -> float:
    """Poll until `predicate()`; returns the seconds it took. Fails if a daemon died meanwhile."""
    return await waiting.eventually(predicate, timeout=timeout, what=what, interval=0.1, check=alive(*replicas))


async def history(stack: Stack) -> list[str]:
    out = await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")
    return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]


@pytest.mark.prometheus
@pytest.mark.timeout(90)
async def test_two_daemons_roll_a_bad_deploy_back_exactly_once(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES, leader_election=True, start_daemon=False) as stack, \
            replica(stack, "rollguard-0") as first:
        await wait_for(lambda: holder(stack) == "rollguard-0", timeout=10, what="rollguard-0 to lead",
                       replicas=(first,))
        async with replica(stack, "rollguard-1") as second:
            both = (first, second)
            await stack.apply(backend_service())
            await deploy(stack, "backend:v1")
            await rollout_status(stack)
            await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
            await wait_for(lambda: image_of(stack) == "backend:v1", timeout=60, replicas=both,
                           what="the leader to roll backend back to v1")
            await wait_for(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30, replicas=both,
                           what="the rollback to complete")
            await asyncio.sleep(LEASE_SECONDS)  # room for a second rollback, were there one
            assert holder(stack) == "rollguard-0", "the leader never changed"
            await assert_rolled_back_once(stack, revision=2, history_after=["2", "3"])
            assert await leader_metric(first) == 1.0
            assert await leader_metric(second) == 0.0


async def assert_rolled_back_once(stack: Stack, *, revision: int, history_after: list[str]) -> None:
    """What people see of one rollback of `revision`: one undo, one Event, one page, one Slack message."""
    assert await history(stack) == history_after, "exactly one undo (kubectl rollout history)"
    assert revision_of(stack) == int(history_after[-1])
    rolled_back = [e for e in rollguard_events(stack, "RolledBack") if f"revision {revision} " in e["message"]]
    assert [e.get("count", 1) for e in rolled_back] == [1], rolled_back
    started = [e for e in rollguard_events(stack, "AnalysisStarted") if f"revision {revision} " in e["message"]]
    assert [e.get("count", 1) for e in started] == [1], f"the rollout was announced more than once: {started}"
    incident = stack.pagerduty.incident(f"rollguard/staging/backend/{revision}")
    assert incident is not None, "no PagerDuty incident"
    summaries = [str(e["payload"]["summary"]) for e in incident.events if e.get("event_action") == "trigger"]
    assert len([s for s in summaries if "Rolled back" in s]) == 1, summaries
    assert len([i for i in stack.pagerduty.incidents if i.dedup_key == incident.dedup_key]) == 1
    # A rollout's thread root is edited as it moves on (its replies repeat each step): count root versions.
    needle = f"Rolled back staging/backend from revision {revision} "
    versions = [str(v) for root in stack.slack.roots() for v in (*(h.get("text") for h in root.history), root.text)]
    assert len([v for v in versions if needle in v]) == 1, versions


async def leader_metric(replica: Replica) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{replica.url}/metrics") as response:
        text = await response.text()
    match = re.search(r"^rollguard_is_leader (\S+)$", text, flags=re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


def lease_time(stack: Stack, field: str) -> float:
    lease = stack.cluster.store.peek(LEASES, "default", stack.settings.lease_name)
    assert lease is not None
    return datetime.fromisoformat(str(lease["spec"][field]).replace("Z", "+00:00")).timestamp()


@pytest.mark.prometheus
@pytest.mark.timeout(90)
async def test_when_the_leader_dies_mid_analysis_the_standby_finishes_it_with_one_rollback(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES, leader_election=True, start_daemon=False) as stack, \
            FrontDoor(stack.cluster.store, tmp_path, logs=WorkloadLogs(stack.cluster.store, stack.cluster.clock)) \
            as first_path, replica(stack, "rollguard-0", kubeconfig=first_path.kubeconfig) as first:
        await wait_for(lambda: holder(stack) == "rollguard-0", timeout=10, what="rollguard-0 to lead",
                       replicas=(first,))
        async with replica(stack, "rollguard-1") as second:
            both = (first, second)
            await stack.apply(backend_service())
            await deploy(stack, "backend:v1")
            await rollout_status(stack)
            await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
            await wait_for(lambda: (state_of(stack).get("rollout") or {}).get("revision") == 2
                           and state_of(stack).get("phase") == "analysing", timeout=20, replicas=both,
                           what="rollguard-0 to start analysing revision 2")
            await asyncio.sleep(2)  # inside the policy's 8s initial delay: nothing decided yet
            assert revision_of(stack) == 2

            await kill(first, first_path)
            last_renew = lease_time(stack, "renewTime")
            assert holder(stack) == "rollguard-0", "a killed daemon cannot release the Lease"
            took = await wait_for(lambda: holder(stack) == "rollguard-1", timeout=3 * LEASE_SECONDS,
                                  replicas=(second,), what="rollguard-1 to take the Lease over")
            waited = lease_time(stack, "acquireTime") - last_renew
            assert waited >= LEASE_SECONDS, f"rollguard-1 took over {LEASE_SECONDS - waited:.2f}s before expiry"
            assert took <= LEASE_SECONDS + 1.5, f"rollguard-1 took {took:.1f}s to take over a {LEASE_SECONDS:g}s lease"

            await wait_for(lambda: image_of(stack) == "backend:v1", timeout=30, replicas=(second,),
                           what="rollguard-1 to resume the analysis and roll backend back to v1")
            await wait_for(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30, replicas=(second,),
                           what="the rollback to complete")
            await asyncio.sleep(LEASE_SECONDS)  # room for a second rollback, were there one
            await assert_rolled_back_once(stack, revision=2, history_after=["2", "3"])
            assert await leader_metric(second) == 1.0
