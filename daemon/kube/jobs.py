"""The optional pre-rollback Job (`onRollback.job`), e.g. `alembic downgrade -1`.

The Job runs the *failing* revision's code — it is the code that knows how to undo its own
migration — so its pod template is the failing ReplicaSet's template with the first container's
command replaced: same image, same env, volumes and service account, `restartPolicy: Never`,
`backoffLimit: 0` (a migration is not retried blindly), `activeDeadlineSeconds` = the policy's
timeout. rollguard waits for the Job's `Complete` or `Failed` condition, up to the timeout.

The Job's name is derived from the Deployment, the revision and its template (`job_name`): a second
attempt (after a restart, a handover) adopts the running or finished Job instead of creating one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.clock import Clock
from daemon.kube.client import KubeApiError, KubeClient, KubeError, api_path
from daemon.kube.rollout_state import without_hash_label

JOB_LABEL = "rollguard.io/rollback-job-for"


@dataclass(frozen=True)
class JobOutcome:
    name: str
    succeeded: bool
    message: str


def job_manifest(*, deployment: str, revision: int, pod_template_hash: str, template: Mapping[str, Any],
                 command: Sequence[str], timeout: float) -> dict[str, Any]:
    """The Job for a failing revision's pod template (see the module docstring)."""
    pod_template = without_hash_label(template)
    spec = dict(pod_template.get("spec") or {})
    containers = [dict(c) for c in spec.get("containers") or []]
    if not containers:
        raise ValueError("the failing revision's pod template has no containers")
    first = containers[0]
    first["command"] = list(command)
    first.pop("args", None)
    # Probes and ports belong to the long-running server, not to a one-shot migration.
    for key in ("livenessProbe", "readinessProbe", "startupProbe", "ports", "lifecycle"):
        first.pop(key, None)
    spec["containers"] = [first]
    spec["restartPolicy"] = "Never"
    labels = {JOB_LABEL: deployment}
    metadata = dict(pod_template.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(deployment, revision, pod_template_hash), "labels": labels},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": max(1, int(timeout)),
                 "ttlSecondsAfterFinished": 86400,
                 "template": {"metadata": metadata, "spec": spec}},
    }


def job_name(deployment: str, revision: int, pod_template_hash: str) -> str:
    """The pre-rollback Job's name: one per (Deployment, revision, template), so a second attempt after
    a restart or a handover adopts the Job instead of starting another (63 characters at most)."""
    suffix = f"-rollback-r{revision}-{pod_template_hash[:10]}".rstrip("-")
    return (deployment[: 63 - len(suffix)].rstrip("-.") + suffix)[:63]


async def ensure_job(client: KubeClient, namespace: str, manifest: Mapping[str, Any]) -> str:
    """Create the Job, or adopt the one of the same name that an earlier attempt created; returns its name.

    Raises `KubeError` when it can be neither created nor read."""
    name = str(manifest["metadata"]["name"])
    try:
        await client.create(api_path("batch/v1", "jobs", namespace), dict(manifest))
    except KubeApiError as exc:
        if exc.code != 409:
            raise
        existing = await client.get(api_path("batch/v1", "jobs", namespace, name))
        if ((existing.get("metadata") or {}).get("labels") or {}).get(JOB_LABEL) != manifest["metadata"]["labels"][
                JOB_LABEL]:
            raise KubeApiError(409, "AlreadyExists", f"job {namespace}/{name} exists and is not rollguard's") from exc
    return name


def job_outcome(job: Mapping[str, Any]) -> JobOutcome | None:
    """The finished Job's outcome, or None while it runs."""
    name = str((job.get("metadata") or {}).get("name", ""))
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobOutcome(name, True, f"job {name} completed")
        if condition.get("type") == "Failed":
            return JobOutcome(name, False, f"job {name} failed: {condition.get('reason')}: "
                                           f"{condition.get('message', '')}".rstrip(": "))
    return None


async def wait_job(client: KubeClient, namespace: str, name: str, *, deadline: float, clock: Clock,
                   poll: float = 1.0) -> JobOutcome:
    """Wait for the Job to finish until `deadline` (epoch seconds); never raises for a failed Job."""
    while True:
        try:
            job = await client.get(api_path("batch/v1", "jobs", namespace, name))
        except KubeError as exc:
            job, last_error = {}, str(exc)
        else:
            last_error = ""
        outcome = job_outcome(job)
        if outcome is not None:
            return outcome
        if clock.now() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            return JobOutcome(name, False, f"job {name} did not finish in time{detail}")
        await clock.sleep(poll)
