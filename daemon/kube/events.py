"""Kubernetes Events on the Deployment: the audit trail `kubectl describe deployment/x` shows.

Events are core/v1 Events (what `kubectl describe` lists), shaped as client-go's recorder makes
them: name `<object>.<hex nanoseconds>`, `involvedObject` with uid and resourceVersion,
`source.component: rollguard`. A repeat of the same (object, type, reason, message) within the
recorder's lifetime bumps `count` and `lastTimestamp` with a merge patch instead of adding another.
Recording never raises: an Event the API server refuses for a moment (429, 5xx, unreachable) is
tried again a few times (`RETRY_DELAYS`), then logged and dropped, because the audit trail must
never block or fail a rollback.

Messages are scrubbed before they are written (Events are readable by anyone who may `kubectl
describe` the Deployment): URL user-info and secret query values (`?token=…`), and every secret value
registered with the process-wide `daemon.redaction.SCRUBBER` (the notifiers' tokens and keys).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.clock import Clock, SystemClock
from daemon.kube.client import MERGE_PATCH, KubeApiError, KubeClient, KubeError, api_path
from daemon.redaction import SCRUBBER

log = structlog.get_logger("rollguard.events")

MAX_MESSAGE = 1024  # the API server rejects longer event messages
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between attempts at creating an Event the API server refused for a moment (client-go's
recorder also tries again, twelve times ten seconds apart; a decision waits for this one)."""


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Writes Events about Deployments; a no-op writer in dry-run mode (it logs what it would write).

    `scrub` turns a message into what may be shown (default: the process-wide `SCRUBBER`).
    """

    def __init__(self, client: KubeClient, *, component: str = "rollguard", instance: str | None = None,
                 clock: Clock | None = None, dry_run: bool = False,
                 scrub: Callable[[str], str] | None = None) -> None:
        self._scrub = scrub if scrub is not None else SCRUBBER.scrub
        self._client = client
        self._component = component
        self._instance = instance or socket.gethostname()
        self._clock = clock or SystemClock()
        self._dry_run = dry_run
        self._seen: dict[tuple[str, str, str, str, str], tuple[str, int]] = {}

    async def record(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str,
                     name: str | None = None) -> None:
        """Record an Event about `obj` (a Deployment as returned by the API). `name`: the Event's own
        name, for an Event recorded at most once whoever records it (an existing one is left as it is)."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        chosen = name
        name = str(meta.get("name"))
        message = self._scrub(message)
        message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
        if self._dry_run:
            log.info("dry run: would record event", namespace=namespace, deployment=name, reason=reason,
                     message=message)
            return
        now = self._clock.now()
        key = (namespace, str(meta.get("uid")), type_, reason, message)
        try:
            if key in self._seen:
                event_name, count = self._seen[key]
                await self._client.patch(api_path("v1", "events", namespace, event_name),
                                         {"count": count + 1, "lastTimestamp": _time(now)},
                                         content_type=MERGE_PATCH)
                self._seen[key] = (event_name, count + 1)
                return
            event_name = chosen or f"{name}.{int(now * 1e9):x}"
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": event_name, "namespace": namespace},
                "involvedObject": {"kind": obj.get("kind", "Deployment"),
                                   "apiVersion": obj.get("apiVersion", "apps/v1"),
                                   "namespace": namespace, "name": name, "uid": meta.get("uid"),
                                   "resourceVersion": meta.get("resourceVersion")},
                "reason": reason, "message": message, "type": type_,
                "source": {"component": self._component, "host": self._instance},
                "firstTimestamp": _time(now), "lastTimestamp": _time(now), "count": 1,
                "reportingComponent": self._component, "reportingInstance": self._instance,
            }
            try:
                await self._create(namespace, body)
            except KubeApiError as exc:
                if exc.code != 409 or chosen is None:
                    raise
                log.debug("event already recorded", namespace=namespace, deployment=name, reason=reason)
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = (event_name, 1)
        except KubeError as exc:
            log.warning("could not record event", namespace=namespace, deployment=name, reason=reason,
                        error=str(exc))

    async def _create(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create the Event, trying again (`RETRY_DELAYS`) while the API server answers 429 or 5xx or
        cannot be reached: an Event is the decision's trace in `kubectl describe`."""
        for delay in (*RETRY_DELAYS, None):
            try:
                await self._client.create(api_path("v1", "events", namespace), dict(body))
                return
            except KubeApiError as exc:
                if delay is None or not (exc.code == 429 or exc.code >= 500):
                    raise
                log.info("event not recorded yet; trying again", reason=body.get("reason"), error=str(exc),
                         retry_in=delay)
            except KubeError:
                if delay is None:
                    raise
            await self._clock.sleep(delay)
