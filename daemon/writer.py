"""The one door to the cluster: every write rollguard makes (undo, state annotation, approval
clearing, Events, Jobs, the suspension of a GitOps owner) goes through `ClusterWriter`, which checks
dry-run and leadership at the moment of writing.

Leadership is not a flag read once: before each write the writer asks the lease guard whether this
replica's lease stays valid until at least now plus `margin` seconds; a replica whose lease is about
to run out (an event-loop stall, a lost renewal) writes nothing. Reads are not fenced.

Exceptions: `NotWriting` (a write refused here: dry-run, or not leading); the rest are the Kubernetes
client's (`KubeError`) and the undo's (`daemon.kube.rollback.RollbackError`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.kube.client import JSON_PATCH, MERGE_PATCH, KubeClient, api_path
from daemon.kube.events import EventRecorder
from daemon.kube.jobs import JobOutcome, ensure_job, wait_job
from daemon.kube.rollback import Fence, UndoResult, undo
from daemon.kube.state import ROLLGUARD_PREFIX, STATE_ANNOTATION, AnalysisState, state_patch

log = structlog.get_logger("rollguard.writer")

LeaseGuard = Callable[[float], bool]
"""`guard(margin)`: whether this replica holds the lease until at least now + margin seconds."""


class NotWriting(Exception):
    """This replica may not write now (dry-run, or not the leader); nothing was written."""


class ClusterWriter:
    """Writes to the cluster on behalf of decisions; refuses in dry-run and when not leading."""

    def __init__(self, kube: KubeClient, events: EventRecorder, *, dry_run: bool = False,
                 lease: LeaseGuard | None = None, margin: float = 2.0) -> None:
        self._kube = kube
        self._events = events
        self.dry_run = dry_run
        self._lease = lease
        self.margin = margin
        """Seconds the lease must still be valid for at the moment of a write."""

    def may_write(self) -> bool:
        """Whether a write now would be allowed (not dry-run, lease valid for `margin` more seconds)."""
        return not self.dry_run and (self._lease is None or self._lease(self.margin))

    def leading(self) -> bool:
        """Whether this replica leads (whatever dry-run says): it decides and announces."""
        return self._lease is None or self._lease(0.0)

    def _check(self, what: str) -> None:
        if self.dry_run:
            raise NotWriting(f"dry run: not writing {what}")
        if self._lease is not None and not self._lease(self.margin):
            raise NotWriting(f"not leading (or the lease ends within {self.margin:g}s): not writing {what}")

    async def event(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str,
                    name: str | None = None) -> None:
        """Record an Event (never raises: the audit trail must not block a rollback). `name`: recorded at
        most once under that name (an owed announcement's Event, which a successor may record again)."""
        if not self.may_write():
            log.info("not recording event", reason=reason, dry_run=self.dry_run, message=message)
            return
        await self._events.record(obj, type_=type_, reason=reason, message=message, name=name)

    async def save_state(self, namespace: str, name: str, state: AnalysisState, *,
                         resource_version: str | None = None) -> None:
        """Store the state annotation; raises `NotWriting` or `KubeError`. With `resource_version`, only
        over that version of the Deployment (else the API server answers 409 Conflict)."""
        self._check("the state annotation")
        patch = state_patch(state)
        if resource_version:
            patch["metadata"]["resourceVersion"] = resource_version
        await self._kube.patch(api_path("apps/v1", "deployments", namespace, name), patch,
                               content_type=MERGE_PATCH)

    async def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch rollguard's own annotations (None deletes one); raises `NotWriting` or `KubeError`."""
        self._check("annotations")
        await self._kube.patch(api_path("apps/v1", "deployments", namespace, name),
                               {"metadata": {"annotations": dict(annotations)}}, content_type=MERGE_PATCH)

    async def clear_annotations(self, namespace: str, name: str, keys: tuple[str, ...]) -> None:
        """Remove annotations (an approval once acted on); raises `NotWriting` or `KubeError`."""
        self._check("the approval annotations")
        await self._kube.patch(api_path("apps/v1", "deployments", namespace, name),
                               {"metadata": {"annotations": dict.fromkeys(keys)}}, content_type=MERGE_PATCH)

    async def undo(self, namespace: str, name: str, *, fence: Fence, state: AnalysisState) -> UndoResult:
        """The fenced undo, with `state` written by the same patch; the lease is checked right before
        each patch (after the reads), so a replica that lost its lease meanwhile writes nothing."""
        self._check("the undo")
        return await undo(self._kube, namespace, name, fence=fence, keep_prefix=ROLLGUARD_PREFIX,
                          set_annotations={STATE_ANNOTATION: state.to_json()},
                          before_write=lambda: self._check("the undo"))

    async def patch_gitops_owner(self, path: str, patch: list[dict[str, Any]]) -> None:
        """JSON-patch the Argo CD Application / Flux object that owns a Deployment (its suspension before an
        undo); raises `NotWriting` or `KubeError`."""
        self._check("the GitOps owner's sync settings")
        await self._kube.patch(path, patch, content_type=JSON_PATCH)

    async def ensure_job(self, namespace: str, manifest: Mapping[str, Any]) -> str:
        """Create the pre-rollback Job or adopt the existing one of the same name."""
        self._check("the pre-rollback job")
        return await ensure_job(self._kube, namespace, manifest)

    async def wait_job(self, namespace: str, name: str, *, deadline: float, clock: Any) -> JobOutcome:
        """Wait for the Job (a read; no lease needed)."""
        return await wait_job(self._kube, namespace, name, deadline=deadline, clock=clock)
