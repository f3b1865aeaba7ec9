"""The Job controller (batch/v1, NonIndexed completion mode) as Kubernetes 1.31+ runs it.

* Creates pods `<job>-<5 safe chars>` from the template, labelled `batch.kubernetes.io/job-name`,
  `job-name`, `batch.kubernetes.io/controller-uid` and `controller-uid`, controlled by the Job, until
  `parallelism` run at once and `completions` have succeeded (no `completions`: a work queue, done when
  one pod succeeded and none is left running).
* Replaces failed pods after the pod-failure back-off (10 s, 20 s, 40 s … at most 6 min after the
  latest failure) until more than `backoffLimit` pods failed (default 6; for `restartPolicy: OnFailure`
  the containers' restarts count instead), then fails the Job with reason `BackoffLimitExceeded`.
* `activeDeadlineSeconds` after `startTime` the Job fails with reason `DeadlineExceeded`.
* Finishing takes two steps, as with the 1.31 job-tracking conditions: `SuccessCriteriaMet` or
  `FailureTarget` is added at once and the remaining pods are deleted; `Complete` (with
  `completionTime`) or `Failed` follows when no pod is running or terminating any more.
* `status.active`, `succeeded`, `failed` (zero values omitted, as the API's JSON does), `ready`,
  `terminating`, `startTime`, `uncountedTerminatedPods: {}`; events `SuccessfulCreate`,
  `SuccessfulDelete`, `Completed`, Warning `BackoffLimitExceeded` / `DeadlineExceeded` from
  `job-controller`.

Succeeded and failed counts are read from the Job's pods (the real controller tracks them with pod
finalizers so deleted pods still count; here a pod deleted by hand before the Job saw it is not
counted). Indexed jobs, `suspend`, pod failure and success policies are not simulated.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from daemon.clock import Clock
from sim.controllers.events import NORMAL, WARNING, EventRecorder
from sim.controllers.kubelet import (
    NODE_NAME,
    parse_time,
    pod_is_active,
    pod_is_ready,
    pod_is_terminating,
)
from sim.controllers.replicaset import (
    Schedule,
    create_pod,
    delete_pod,
    is_controlled_by,
    pod_deletion_order,
)
from sim.resources import JOBS, PODS
from sim.store import ApiError, Obj, Store, rfc3339

__all__ = ["JOB_BACKOFF_INITIAL", "JOB_BACKOFF_MAX", "JobController", "pod_failure_backoff"]

JOB_BACKOFF_INITIAL = 10.0
JOB_BACKOFF_MAX = 360.0
_DEFAULT_BACKOFF_LIMIT = 6

COMPLETE = "Complete"
FAILED = "Failed"
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
FAILURE_TARGET = "FailureTarget"
COMPLETIONS_REACHED = "CompletionsReached"
COMPLETIONS_MESSAGE = "Reached expected number of succeeded pods"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_EXCEEDED = "DeadlineExceeded"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"


def pod_failure_backoff(failures: int) -> float:
    """Seconds to wait after the latest pod failure before creating a replacement."""
    if failures <= 0:
        return 0.0
    return min(JOB_BACKOFF_INITIAL * 2.0 ** (failures - 1), JOB_BACKOFF_MAX)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond  # type: ignore[no-any-return]
    return None


def _finished_at(pod: Mapping[str, Any]) -> float:
    """When a failed pod's container ended (its creation time if it never ran)."""
    latest = 0.0
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        ended = (status.get("state") or {}).get("terminated") or {}
        if ended.get("finishedAt"):
            latest = max(latest, parse_time(str(ended["finishedAt"])))
    if latest:
        return latest
    stamp = pod["metadata"].get("creationTimestamp")
    return parse_time(str(stamp)) if stamp else 0.0


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


class JobController:
    """Runs each Job's pods to completion or failure."""

    def __init__(self, store: Store, clock: Clock, *, schedule: Schedule, node_name: str = NODE_NAME,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.node_name = node_name
        self._schedule = schedule
        self._rng = rng
        self._events = EventRecorder(store, clock, "job-controller")

    def sync(self, namespace: str, name: str) -> None:
        job = self.store.peek(JOBS, namespace, name)
        if job is None:
            return  # the garbage collector deletes its pods
        old_status: Mapping[str, Any] = job.get("status") or {}
        if _condition(old_status, COMPLETE) or _condition(old_status, FAILED):
            return
        spec = job.get("spec") or {}
        now = self.clock.now()
        pods = [p for p in self.store.list_objects(PODS, namespace)[0] if is_controlled_by(p, job)]
        active = [p for p in pods if pod_is_active(p)]
        succeeded = sum(1 for p in pods if _phase(p) == "Succeeded")
        failed_pods = [p for p in pods if _phase(p) == "Failed"]
        start = parse_time(str(old_status["startTime"])) if old_status.get("startTime") else now
        conditions: list[Obj] = [dict(c) for c in old_status.get("conditions") or ()]

        failure = self._failure(job, old_status, active, len(failed_pods), start, now)
        success = failure is None and self._succeeded(spec, succeeded, active)
        if failure is not None or success:
            # Finishing: no pod may keep running.
            for pod in active:
                self._delete(job, pod, now)
        else:
            self._scale(job, active, succeeded, failed_pods, now)
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None:
                self._schedule(namespace, name, max(0.0, start + int(deadline) - now))

        pods = [p for p in self.store.list_objects(PODS, namespace)[0] if is_controlled_by(p, job)]
        active = [p for p in pods if pod_is_active(p)]
        terminating = [p for p in pods if pod_is_terminating(p) and _phase(p) not in ("Succeeded", "Failed")]
        status: Obj = {"startTime": rfc3339(start)}
        if failure is not None:
            reason, message = failure
            if not _condition(old_status, FAILURE_TARGET):
                conditions.append(_job_condition(FAILURE_TARGET, reason, message, now))
            if not active and not terminating:
                conditions.append(_job_condition(FAILED, reason, message, now))
                self._events.event(job, WARNING, reason, message)
        elif success:
            if not _condition(old_status, SUCCESS_CRITERIA_MET):
                conditions.append(_job_condition(SUCCESS_CRITERIA_MET, COMPLETIONS_REACHED, COMPLETIONS_MESSAGE, now))
            if not active and not terminating:
                conditions.append(_job_condition(COMPLETE, COMPLETIONS_REACHED, COMPLETIONS_MESSAGE, now))
                status["completionTime"] = rfc3339(now)
                self._events.event(job, NORMAL, "Completed", "Job completed")
        for key, value in (("active", len(active)), ("succeeded", succeeded), ("failed", len(failed_pods))):
            if value:
                status[key] = value
        status["ready"] = sum(1 for p in active if pod_is_ready(p))
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        if conditions:
            status["conditions"] = conditions
        if status != old_status:
            updated = dict(job)
            updated["status"] = status
            self.store.replace(JOBS, updated, namespace=namespace, name=name,
                               expect_rv=job["metadata"]["resourceVersion"])

    def _failure(self, job: Mapping[str, Any], old_status: Mapping[str, Any], active: list[Obj], failed: int,
                 start: float, now: float) -> tuple[str, str] | None:
        """(reason, message) when the Job has failed (or was already found failing), else None."""
        target = _condition(old_status, FAILURE_TARGET)
        if target is not None:
            return str(target.get("reason", "")), str(target.get("message", ""))
        spec = job.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and now - start >= int(deadline):
            return DEADLINE_EXCEEDED, DEADLINE_MESSAGE
        limit = int(spec.get("backoffLimit", _DEFAULT_BACKOFF_LIMIT))
        if failed > limit:
            return BACKOFF_LIMIT_EXCEEDED, BACKOFF_MESSAGE
        policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if policy == "OnFailure":
            restarts = sum(int(c.get("restartCount") or 0) for p in active
                           for c in (p.get("status") or {}).get("containerStatuses") or ())
            if (restarts > 0) if limit == 0 else (restarts >= limit):
                return BACKOFF_LIMIT_EXCEEDED, BACKOFF_MESSAGE
        return None

    @staticmethod
    def _succeeded(spec: Mapping[str, Any], succeeded: int, active: list[Obj]) -> bool:
        completions = spec.get("completions")
        if completions is None:
            return succeeded > 0 and not active
        return succeeded >= int(completions)

    def _scale(self, job: Obj, active: list[Obj], succeeded: int, failed_pods: list[Obj], now: float) -> None:
        spec = job.get("spec") or {}
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None:
            # Work queue: keep `parallelism` pods until one succeeds, then only let the rest finish.
            want = parallelism if succeeded == 0 else len(active)
        else:
            want = min(parallelism, int(completions) - succeeded)
        diff = want - len(active)
        if diff < 0:
            for pod in pod_deletion_order(active)[:-diff]:
                self._delete(job, pod, now)
            return
        if diff == 0:
            return
        if failed_pods:
            ready_at = max(_finished_at(p) for p in failed_pods) + pod_failure_backoff(len(failed_pods))
            if now < ready_at:
                meta = job["metadata"]
                self._schedule(meta["namespace"], meta["name"], ready_at - now)
                return
        meta = job["metadata"]
        labels = {"batch.kubernetes.io/controller-uid": meta["uid"], "batch.kubernetes.io/job-name": meta["name"],
                  "controller-uid": meta["uid"], "job-name": meta["name"]}
        template = spec.get("template") or {}
        for _ in range(diff):
            try:
                pod = create_pod(self.store, job, template, extra_labels=labels, node_name=self.node_name,
                                 rng=self._rng)
            except ApiError as err:
                self._events.event(job, WARNING, "FailedCreate", f"Error creating: {err.message}")
                return
            self._events.event(job, NORMAL, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")

    def _delete(self, job: Mapping[str, Any], pod: Mapping[str, Any], now: float) -> None:
        try:
            delete_pod(self.store, pod, now)
        except ApiError as err:
            if err.code == 404:
                return
            raise
        self._events.event(job, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")


def _job_condition(type_: str, reason: str, message: str, now: float) -> Obj:
    stamp = rfc3339(now)
    return {"type": type_, "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}
