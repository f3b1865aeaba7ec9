"""The optional pre-rollback Job (`onRollback.job`), e.g. `alembic downgrade -1`.

The Job runs the *failing* revision's code — it is the code that knows how to undo its own
migration — so its pod template is the failing ReplicaSet's template with the first container's
command replaced: same image, same env, volumes and service account, `restartPolicy: Never`,
`backoffLimit: 0` (a migration is not retried blindly), `activeDeadlineSeconds` = the policy's
timeout. rollguard waits for the Job's `Complete` or `Failed` condition, up to the timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.clock import Clock
from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.rollout_state import without_hash_label

JOB_LABEL = "rollguard.io/rollback-job-for"


@dataclass(frozen=True)
class JobOutcome:
    name: str
    succeeded: bool
    message: str


def job_manifest(*, deployment: str, revision: int, template: Mapping[str, Any], command: Sequence[str],
                 timeout: float) -> dict[str, Any]:
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
        "metadata": {"generateName": f"{deployment}-rollback-r{revision}-", "labels": labels},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": max(1, int(timeout)),
                 "ttlSecondsAfterFinished": 86400,
                 "template": {"metadata": metadata, "spec": spec}},
    }


async def run_job(client: KubeClient, namespace: str, manifest: Mapping[str, Any], *, timeout: float,
                  clock: Clock, poll: float = 1.0) -> JobOutcome:
    """Create the Job and wait for it to finish; never raises for a failed or timed-out Job."""
    try:
        created = await client.create(api_path("batch/v1", "jobs", namespace), dict(manifest))
    except KubeError as exc:
        return JobOutcome("", False, f"could not create the rollback job: {exc}")
    name = str(created["metadata"]["name"])
    deadline = clock.now() + timeout
    while True:
        try:
            job = await client.get(api_path("batch/v1", "jobs", namespace, name))
        except KubeError as exc:
            job = {}
            last_error = str(exc)
        else:
            last_error = ""
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                return JobOutcome(name, True, f"job {name} completed")
            if condition.get("type") == "Failed":
                return JobOutcome(name, False, f"job {name} failed: {condition.get('reason')}: "
                                               f"{condition.get('message', '')}".rstrip(": "))
        if clock.now() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            return JobOutcome(name, False, f"job {name} did not finish within {timeout:g}s{detail}")
        await clock.sleep(poll)
