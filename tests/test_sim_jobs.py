"""The simulated Job controller on a fake clock: completion, retries up to backoffLimit, deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.clock import FakeClock
from sim.controllers import ControllerManager
from sim.resources import EVENTS, JOBS, NAMESPACES, PODS
from sim.store import Obj, Store, WatchEvent, rfc3339

T0 = 1_700_000_000.0


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


@dataclass
class Sim:
    store: Store
    clock: FakeClock

    async def run(self, seconds: float, step: float = 0.25) -> None:
        """Advance the fake clock in steps, letting the controllers catch up before and after each."""
        await settle()
        for _ in range(round(seconds / step)):
            await self.clock.advance(step)
            await settle()

    def job(self, name: str = "migrate") -> Obj:
        return self.store.get(JOBS, "shop", name)

    def pods(self) -> list[Obj]:
        return list(self.store.list_objects(PODS, "shop")[0])

    def conditions(self, name: str = "migrate") -> list[tuple[str, str, str, str]]:
        return [(c["type"], c["status"], c["reason"], c["message"])
                for c in self.job(name).get("status", {}).get("conditions", [])]

    def events(self, name: str = "migrate") -> list[tuple[str, str, str]]:
        found = [e for e in self.store.list_objects(EVENTS, "shop")[0]
                 if e["involvedObject"]["kind"] == "Job" and e["involvedObject"]["name"] == name]
        found.sort(key=lambda e: int(e["metadata"]["name"].rpartition(".")[2], 16))
        return [(e["type"], e["reason"], e["message"]) for e in found]


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    clock = FakeClock(T0)
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    async with ControllerManager(store, clock):
        yield Sim(store, clock)


def job(name: str = "migrate", *, env: dict[str, str], restart_policy: str = "Never", **spec: Any) -> Obj:
    container = {"name": "task", "image": "migrate:1", "env": [{"name": k, "value": v} for k, v in env.items()]}
    return {"metadata": {"name": name, "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"restartPolicy": restart_policy, "containers": [container]}},
                     **spec}}


COMPLETE = [("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
            ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")]
BACKOFF = [("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
           ("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]


async def test_job_runs_its_pods_to_completion(sim: Sim) -> None:
    created = sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "2"}, completions=2, parallelism=1))
    await settle()
    [pod] = sim.pods()
    uid = created["metadata"]["uid"]
    assert pod["metadata"]["name"].startswith("migrate-")
    assert len(pod["metadata"]["name"]) == len("migrate-") + 5
    assert pod["metadata"]["labels"] == {"app": "migrate", "batch.kubernetes.io/controller-uid": uid,
                                         "batch.kubernetes.io/job-name": "migrate", "controller-uid": uid,
                                         "job-name": "migrate"}
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate",
                                                   "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    status = sim.job()["status"]
    assert status == {"startTime": rfc3339(T0), "active": 1, "ready": 0, "terminating": 0,
                      "uncountedTerminatedPods": {}}

    await sim.run(6)
    status = sim.job()["status"]
    assert sim.conditions() == COMPLETE
    assert status["succeeded"] == 2
    assert "active" not in status
    assert "failed" not in status
    assert status["completionTime"] == rfc3339(T0 + 5)
    assert [p["status"]["phase"] for p in sim.pods()] == ["Succeeded", "Succeeded"]
    events = sim.events()
    assert [e[1] for e in events] == ["SuccessfulCreate", "SuccessfulCreate", "Completed"]
    assert events[-1] == ("Normal", "Completed", "Job completed")


async def test_parallel_job_never_runs_more_than_parallelism_pods(sim: Sim) -> None:
    peak = 0

    def watch(event: WatchEvent) -> None:
        nonlocal peak
        running = [p for p in sim.store.list_objects(PODS, "shop")[0]
                   if p.get("status", {}).get("phase") in ("Pending", "Running")]
        peak = max(peak, len(running))
    sim.store.add_listener(watch)
    sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "1"}, completions=5, parallelism=2))
    await sim.run(6)
    assert sim.conditions() == COMPLETE
    assert sim.job()["status"]["succeeded"] == 5
    assert len(sim.pods()) == 5
    assert peak == 2


async def test_work_queue_job_completes_when_a_pod_succeeded_and_none_runs(sim: Sim) -> None:
    sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "1"}, parallelism=3))
    await sim.run(3)
    assert sim.conditions() == COMPLETE
    assert sim.job()["status"]["succeeded"] == 3


async def test_failed_pods_are_retried_with_back_off_until_the_backoff_limit(sim: Sim) -> None:
    sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "1", "SIM_EXIT_CODE": "1"}, backoffLimit=1))
    # The pod fails at 1.5 s, stamped finishedAt 1 s (whole seconds): the replacement comes 10 s later.
    await sim.run(10.75)
    assert len(sim.pods()) == 1, "the replacement waits out the 10 s back-off"
    assert sim.job()["status"]["failed"] == 1
    await sim.run(0.5)
    assert len(sim.pods()) == 2
    await sim.run(2)
    status = sim.job()["status"]
    assert sim.conditions() == BACKOFF
    assert status["failed"] == 2
    assert "completionTime" not in status
    assert "active" not in status
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in sim.events()
    await sim.run(30)
    assert len(sim.pods()) == 2, "a failed Job creates no more pods"


async def test_crash_looping_on_failure_pod_counts_restarts_against_the_backoff_limit(sim: Sim) -> None:
    sim.store.create(JOBS, job(env={"SIM_CRASH": "true"}, restart_policy="OnFailure", backoffLimit=2))
    await sim.run(5)
    [pod] = sim.pods()
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert sim.conditions() == []
    # Restarted at 1.5 s and, after a 10 s back-off, at 12.5 s: the second restart reaches the limit.
    await sim.run(8)
    assert sim.conditions()[0] == BACKOFF[0]
    await sim.run(1.5)
    assert sim.conditions() == BACKOFF
    assert sim.pods() == [], "the crash-looping pod was deleted"


async def test_active_deadline_fails_the_job_and_stops_its_pods(sim: Sim) -> None:
    sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "100"}, activeDeadlineSeconds=5))
    await sim.run(4.75)
    assert sim.conditions() == []
    assert sim.job()["status"]["ready"] == 1
    await sim.run(0.25)
    assert sim.conditions() == [("FailureTarget", "True", "DeadlineExceeded",
                                 "Job was active longer than specified deadline")]
    assert sim.job()["status"]["terminating"] == 1
    await sim.run(1.25)
    assert [c[0] for c in sim.conditions()] == ["FailureTarget", "Failed"]
    assert sim.conditions()[1][2] == "DeadlineExceeded"
    assert sim.job()["status"]["terminating"] == 0
    assert ("Warning", "DeadlineExceeded", "Job was active longer than specified deadline") in sim.events()
    assert ("Normal", "SuccessfulDelete", f"Deleted pod: {sim.events()[0][2].removeprefix('Created pod: ')}") in \
        sim.events()


async def test_deleting_a_job_deletes_its_pods(sim: Sim) -> None:
    sim.store.create(JOBS, job(env={"SIM_RUN_SECONDS": "100"}, parallelism=2, completions=2))
    await sim.run(1)
    assert len(sim.pods()) == 2
    sim.store.delete(JOBS, "shop", "migrate")
    await sim.run(1.5)
    assert sim.pods() == []
