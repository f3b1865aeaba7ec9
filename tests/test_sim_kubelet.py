"""The simulated kubelet: pod phases, readiness, crash loops, job pods and deletion, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.clock import FakeClock
from sim.controllers import ControllerManager, pod_is_available, pod_is_ready
from sim.controllers.kubelet import Kubelet
from sim.resources import EVENTS, NAMESPACES, PODS
from sim.store import Obj, Store, rfc3339

T0 = 1_700_000_000.0


class Harness:
    """A kubelet driven by hand: `sync` at the fake clock's now, with the wake-ups it asked for recorded."""

    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.store = Store(self.clock)
        self.store.create(NAMESPACES, {"metadata": {"name": "shop"}})
        self.wakeups: list[tuple[str, float]] = []
        self.kubelet = Kubelet(self.store, self.clock, schedule=lambda ns, name, delay: self.wakeups.append(
            (name, delay)))

    def pod(self, name: str = "web-1", *, image: str = "nginx:1.25", env: dict[str, str] | None = None,
            restart_policy: str | None = None, node: str | None = "sim-node-1") -> Obj:
        spec: Obj = {"containers": [{"name": "web", "image": image,
                                     "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]}
        if restart_policy:
            spec["restartPolicy"] = restart_policy
        if node:
            spec["nodeName"] = node
        return self.store.create(PODS, {"metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
                                        "spec": spec, "status": {"phase": "Pending"}})

    async def at(self, seconds: float, name: str = "web-1") -> Obj | None:
        """Move the clock to T0 + seconds, sync the pod, return it (None once deleted)."""
        await self.clock.advance(T0 + seconds - self.clock.now())
        self.kubelet.sync("shop", name)
        return self.store.peek(PODS, "shop", name)

    def events(self, name: str = "web-1") -> list[tuple[str, str, str, int]]:
        found = [e for e in self.store.list_objects(EVENTS, "shop")[0] if e["involvedObject"]["name"] == name]
        found.sort(key=lambda e: e["metadata"]["name"])
        return [(e["type"], e["reason"], e["message"], e["count"]) for e in found]


def conditions(pod: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in pod["status"]["conditions"]}


def container(pod: Obj) -> dict[str, Any]:
    status: dict[str, Any] = pod["status"]["containerStatuses"][0]
    return status


async def test_pod_goes_pending_then_running_then_ready() -> None:
    h = Harness()
    h.pod()
    pod = await h.at(0)
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert conditions(pod) == {"PodReadyToStartContainers": ("False", ""), "Initialized": ("True", ""),
                               "Ready": ("False", "ContainersNotReady"),
                               "ContainersReady": ("False", "ContainersNotReady"), "PodScheduled": ("True", "")}
    assert container(pod)["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert "podIP" not in pod["status"]
    assert h.wakeups[-1] == ("web-1", 0.5)

    pod = await h.at(0.5)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert container(pod)["state"] == {"running": {"startedAt": rfc3339(T0 + 0.5)}}
    assert container(pod)["started"] is True
    assert container(pod)["ready"] is False
    assert pod["status"]["podIP"] == "10.244.0.2"
    assert pod["status"]["podIPs"] == [{"ip": "10.244.0.2"}]
    assert pod["status"]["hostIP"] == "10.0.0.10"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [web]"
    assert not pod_is_ready(pod)
    assert h.wakeups[-1] == ("web-1", 1.5), "the default SIM_READY_DELAY is 2 s from scheduling"

    pod = await h.at(2)
    assert pod is not None
    assert conditions(pod)["Ready"] == ("True", "")
    assert conditions(pod)["ContainersReady"] == ("True", "")
    assert container(pod)["ready"] is True
    assert pod_is_ready(pod)
    assert pod_is_available(pod, 0, h.clock.now())
    assert not pod_is_available(pod, 5, h.clock.now())
    assert pod_is_available(pod, 5, h.clock.now() + 5)
    assert h.events() == [
        ("Normal", "Scheduled", "Successfully assigned shop/web-1 to sim-node-1", 1),
        ("Normal", "Pulled", 'Container image "nginx:1.25" already present on machine', 1),
        ("Normal", "Created", "Created container: web", 1),
        ("Normal", "Started", "Started container web", 1),
    ]


async def test_ready_delay_comes_from_the_template() -> None:
    h = Harness()
    h.pod(env={"SIM_READY_DELAY": "7"})
    await h.at(0)
    pod = await h.at(6.9)
    assert pod is not None
    assert not pod_is_ready(pod)
    pod = await h.at(7)
    assert pod is not None
    assert pod_is_ready(pod)


@pytest.mark.parametrize(("image", "env"), [("nginx:1.25", {"SIM_READY": "false"}), ("nginx:never-ready", {})])
async def test_never_ready_pod_keeps_running_unready(image: str, env: dict[str, str]) -> None:
    h = Harness()
    h.pod(image=image, env=env)
    await h.at(0)
    await h.at(0.5)
    h.wakeups.clear()
    pod = await h.at(3600)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert not pod_is_ready(pod)
    assert container(pod)["restartCount"] == 0
    assert h.wakeups == [], "nothing more will ever change"


async def test_crash_loop_restarts_with_back_off_and_never_becomes_ready() -> None:
    h = Harness()
    h.pod(env={"SIM_CRASH": "true"})
    await h.at(0)
    pod = await h.at(1)
    assert pod is not None
    assert container(pod)["state"] == {"running": {"startedAt": rfc3339(T0 + 0.5)}}

    # First exit after 1 s of running: restarted at once.
    pod = await h.at(1.5)
    assert pod is not None
    assert container(pod)["restartCount"] == 1
    assert "running" in container(pod)["state"]
    assert container(pod)["lastState"]["terminated"]["exitCode"] == 1
    assert container(pod)["lastState"]["terminated"]["reason"] == "Error"

    # Second exit: 10 s back-off in CrashLoopBackOff.
    pod = await h.at(2.5)
    assert pod is not None
    uid = pod["metadata"]["uid"]
    assert container(pod)["state"] == {"waiting": {
        "reason": "CrashLoopBackOff",
        "message": f"back-off 10s restarting failed container=web pod=web-1_shop({uid})"}}
    assert container(pod)["restartCount"] == 1
    assert pod["status"]["phase"] == "Running"
    assert not pod_is_ready(pod)
    assert h.wakeups[-1] == ("web-1", 10.0)

    pod = await h.at(12.5)
    assert pod is not None
    assert container(pod)["restartCount"] == 2
    assert "running" in container(pod)["state"]
    pod = await h.at(13.5)
    assert pod is not None
    assert container(pod)["state"]["waiting"]["message"].startswith("back-off 20s ")
    pod = await h.at(33.5)
    assert pod is not None
    assert container(pod)["restartCount"] == 3
    # The back-off is capped at 5 minutes however long the loop runs.
    pod = await h.at(3 * 3600)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert container(pod)["restartCount"] > 30
    assert not pod_is_ready(pod)
    backoffs = [e for e in h.events() if e[1] == "BackOff"]
    assert len(backoffs) == 1, "repeats of the same event bump its count"
    assert backoffs[0][0] == "Warning"
    assert backoffs[0][2] == f"Back-off restarting failed container web in pod web-1_shop({uid})"
    assert backoffs[0][3] >= 2, backoffs


async def test_job_pod_succeeds_after_its_run_time() -> None:
    h = Harness()
    h.pod(restart_policy="Never", env={"SIM_RUN_SECONDS": "3"})
    await h.at(0)
    pod = await h.at(3.4)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    pod = await h.at(3.5)
    assert pod is not None
    assert pod["status"]["phase"] == "Succeeded"
    terminated = container(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert terminated["startedAt"] == rfc3339(T0 + 0.5)
    assert terminated["finishedAt"] == rfc3339(T0 + 3.5)
    assert conditions(pod)["Ready"] == ("False", "PodCompleted")


async def test_job_pod_fails_with_its_exit_code() -> None:
    h = Harness()
    h.pod(restart_policy="Never", env={"SIM_RUN_SECONDS": "1", "SIM_EXIT_CODE": "3"})
    await h.at(0)
    pod = await h.at(2)
    assert pod is not None
    assert pod["status"]["phase"] == "Failed"
    terminated = container(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert conditions(pod)["Ready"] == ("False", "PodFailed")


async def test_on_failure_job_pod_restarts_in_place() -> None:
    h = Harness()
    h.pod(restart_policy="OnFailure", env={"SIM_RUN_SECONDS": "1", "SIM_EXIT_CODE": "1"})
    await h.at(0)
    pod = await h.at(1.5)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert container(pod)["restartCount"] == 1
    pod = await h.at(2.5)
    assert pod is not None
    assert container(pod)["state"]["waiting"]["reason"] == "CrashLoopBackOff"


async def test_bad_sim_value_leaves_a_long_running_pod_pending_with_the_reason() -> None:
    h = Harness()
    h.pod(env={"SIM_READY": "maybe"})
    pod = await h.at(0)
    assert pod is not None
    message = "invalid simulated behaviour: SIM_READY: 'maybe' is not a boolean"
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["message"] == message
    assert container(pod)["state"] == {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
    assert ("Warning", "Failed", f"Error: {message}", 1) in h.events()
    pod = await h.at(60)
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"


async def test_bad_sim_value_fails_a_job_pod() -> None:
    h = Harness()
    h.pod(restart_policy="Never", env={"SIM_EXIT_CODE": "x"})
    pod = await h.at(0)
    assert pod is not None
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["message"] == "invalid simulated behaviour: SIM_EXIT_CODE: 'x' is not a number"


async def test_deleted_pod_is_removed_once_its_containers_stopped() -> None:
    h = Harness()
    h.pod()
    await h.at(0)
    pod = await h.at(3)
    assert pod is not None
    pod["metadata"]["deletionTimestamp"] = rfc3339(h.clock.now() + 30)
    pod["metadata"]["deletionGracePeriodSeconds"] = 30
    h.store.replace(PODS, pod, namespace="shop", name="web-1")
    assert await h.at(3.5) is not None, "SIGTERM was sent; the container needs a moment"
    assert h.wakeups[-1] == ("web-1", 1.0)
    assert await h.at(4.5) is None
    assert ("Normal", "Killing", "Stopping container web", 1) in h.events()


async def test_unscheduled_pod_is_bound_to_the_node() -> None:
    h = Harness()
    h.pod(node=None)
    pod = await h.at(0)
    assert pod is not None
    assert pod["spec"]["nodeName"] == "sim-node-1"
    scheduled = [e for e in h.store.list_objects(EVENTS, "shop")[0] if e["reason"] == "Scheduled"]
    assert [(e["source"], e["message"]) for e in scheduled] == [
        ({"component": "default-scheduler"}, "Successfully assigned shop/web-1 to sim-node-1")]


async def test_manager_timers_drive_the_pod_lifecycle_on_a_fake_clock() -> None:
    clock = FakeClock(T0)
    store = Store(clock)
    store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    store.create(PODS, {"metadata": {"name": "loop", "namespace": "shop"},
                        "spec": {"containers": [{"name": "c", "image": "app:crashloop"}]}})
    async with ControllerManager(store, clock):
        for _ in range(40):
            await clock.advance(1)
            for _ in range(10):
                await asyncio.sleep(0)
        pod = store.peek(PODS, "shop", "loop")
        assert pod is not None
        # Exits at 1.5, restarts at once; exits at 2.5, back-off 10 s → 12.5; exits 13.5, 20 s → 33.5.
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 3
        assert not pod_is_ready(pod)
