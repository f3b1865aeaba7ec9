"""A local PagerDuty Events API v2 over HTTPS: `POST /v2/enqueue`, validated, with incidents.

It answers like PagerDuty: 202 `{"status": "success", "message": "Event processed", "dedup_key": …}`,
or 400 `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`; injected
faults answer 429 (throttled) or 5xx. Accepted events drive a small incident model keyed by
dedup_key — trigger opens (or adds to) an incident, acknowledge acknowledges it, resolve closes it,
and a trigger after a resolve opens a new one — so a test can assert "exactly one open incident".

TLS: the certificate comes from `sim.receivers.tls` (made with openssl at start). Clients trust
`ca_file` (or `client_ssl_context()`), e.g. `EventsApiV2Client(key, base_url=rx.url,
verify=rx.client_ssl_context())`.

Validation follows the Events API v2 documentation and is slightly stricter in one way: unknown
fields in the event or payload are rejected (PagerDuty ignores them), so a misspelt field fails a
test instead of silently vanishing.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from sim.receivers import LocalReceiver, read_body, respond
from sim.receivers.tls import TlsMaterial, make_local_tls

ROUTING_KEY_LENGTH = 32
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
SEVERITIES = ("critical", "error", "warning", "info")
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
_EVENT_FIELDS = frozenset(
    {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
)
_PAYLOAD_FIELDS = frozenset(
    {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
)

IncidentStatus = Literal["triggered", "acknowledged", "resolved"]


@dataclass
class Incident:
    """An incident as the local PagerDuty keeps it."""

    dedup_key: str
    routing_key: str = field(repr=False)
    """Kept out of repr: it is the integration's secret, and reprs end up in test failure output."""
    status: IncidentStatus
    severity: str
    summary: str
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every accepted event for this incident, in order (routing key removed)."""

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"


def validate_event(event: Any, *, routing_keys: frozenset[str] | None = None) -> list[str]:
    """Events API v2 validation errors, in PagerDuty's style; empty when the event is valid."""
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors: list[str] = [f"'{key}' is not a recognised field" for key in sorted(set(event) - _EVENT_FIELDS)]
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        errors.append("'routing_key' is missing or blank")
    elif len(routing_key) != ROUTING_KEY_LENGTH:
        errors.append(f"Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LENGTH} characters)")
    elif routing_keys is not None and routing_key not in routing_keys:
        errors.append("Invalid routing key")
    action = event.get("event_action")
    if action not in EVENT_ACTIONS:
        errors.append(f"'event_action' is invalid (must be one of: {', '.join(EVENT_ACTIONS)})")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None:
        if not isinstance(dedup_key, str) or not dedup_key:
            errors.append("'dedup_key' must be a non-empty string")
        elif len(dedup_key) > MAX_DEDUP_KEY:
            errors.append(f"Length of 'dedup_key' is too long (maximum is {MAX_DEDUP_KEY} characters)")
    elif action in ("acknowledge", "resolve"):
        errors.append(f"'dedup_key' is missing or blank (required for event_action '{action}')")
    if action == "trigger":
        errors.extend(_validate_payload(event.get("payload")))
    for list_field in ("images", "links"):
        if list_field in event and not isinstance(event[list_field], list):
            errors.append(f"'{list_field}' must be an array")
    return errors


def _validate_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or is not an object"]
    errors = [f"'payload.{key}' is not a recognised field" for key in sorted(set(payload) - _PAYLOAD_FIELDS)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > MAX_SUMMARY:
        errors.append(f"Length of 'payload.summary' is too long (maximum is {MAX_SUMMARY} characters)")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append(f"'payload.severity' is invalid (must be one of: {', '.join(SEVERITIES)})")
    if "timestamp" in payload and not _is_iso8601(payload["timestamp"]):
        errors.append("'payload.timestamp' is not a valid ISO 8601 date/time")
    for text_field in ("component", "group", "class"):
        if text_field in payload and not isinstance(payload[text_field], str):
            errors.append(f"'payload.{text_field}' must be a string")
    return errors


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        # fromisoformat reads "Z" and offsets since 3.11; a bare date without time is not an event time.
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class PagerDutyReceiver(LocalReceiver):
    """A local PagerDuty Events API v2 over HTTPS.

    `routing_keys`: the integration keys it knows (any well-formed 32-character key when None);
    an unknown key is a 400, as PagerDuty answers.
    """

    _tls = True

    def __init__(self, *, routing_keys: Iterable[str] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._routing_keys = None if routing_keys is None else frozenset(routing_keys)
        self._material: TlsMaterial | None = None
        self.incidents: list[Incident] = []
        """Every incident ever opened, oldest first (resolved ones stay, with status "resolved")."""
        self.events: list[dict[str, Any]] = []
        """Accepted events in order (routing key removed, so tests can print them)."""

    @property
    def url(self) -> str:
        """The base URL for `EventsApiV2Client(base_url=...)`."""
        return self.origin

    @property
    def ca_file(self) -> str:
        """Path of the PEM CA certificate clients must trust."""
        if self._material is None:
            raise RuntimeError("PagerDutyReceiver is not started")
        return str(self._material.ca_file)

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSLContext that trusts this receiver (and nothing else)."""
        if self._material is None:
            raise RuntimeError("PagerDutyReceiver is not started")
        return self._material.client_context()

    def open_incidents(self) -> list[Incident]:
        return [incident for incident in self.incidents if incident.is_open]

    def incident(self, dedup_key: str) -> Incident | None:
        """The latest incident with this dedup_key, if any."""
        for incident in reversed(self.incidents):
            if incident.dedup_key == dedup_key:
                return incident
        return None

    async def _ssl_context(self) -> ssl.SSLContext:
        # openssl runs as a subprocess; keep it off the event loop.
        self._material = await asyncio.to_thread(make_local_tls)
        return self._material.server_context()

    async def close(self) -> None:
        await super().close()
        if self._material is not None:
            self._material.cleanup()

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        return app

    def _fault_response(
        self, status: int, retry_after: float | None, echo: str | None
    ) -> tuple[Any, Mapping[str, str]]:
        if status == 429:
            message = "Requests for this service are arriving too quickly. Please retry later."
            return {"status": "throttle event", "message": f"{message} {echo}" if echo else message}, {}
        if status == 400:
            return _invalid([echo or "injected failure"]), {}
        return f"Internal Server Error {echo}" if echo else "Internal Server Error", {}

    def _echo(self, request: web.Request, body: Any) -> str:
        # The Events API's credential is in the body, not a header.
        key = body.get("routing_key") if isinstance(body, dict) else None
        return f"request {request.method} {request.path_qs} routing_key={key} body={body}"

    async def _enqueue(self, request: web.Request) -> web.StreamResponse:
        body, parse_error = await read_body(request)
        fault = await self._maybe_fault(request, body)
        if fault is not None:
            return fault
        if parse_error is not None:
            errors = ["Event object is not valid JSON"]
        elif request.content_type != "application/json":
            errors = ["Content-Type must be application/json"]
        else:
            errors = validate_event(body, routing_keys=self._routing_keys)
        if errors:
            answer = _invalid(errors)
            self._record(request, body, 400, answer, accepted=False, errors=tuple(errors))
            return respond(400, answer)
        dedup_key = self._apply(body)
        answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        self._record(request, body, 202, answer, accepted=True)
        return respond(202, answer)

    def _apply(self, event: dict[str, Any]) -> str:
        action = event["event_action"]
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        public = {k: v for k, v in event.items() if k != "routing_key"}
        self.events.append(public)
        current = self.incident(dedup_key)
        if action == "trigger":
            payload = event["payload"]
            if current is None or not current.is_open:
                current = Incident(
                    dedup_key=dedup_key, routing_key=event["routing_key"], status="triggered",
                    severity=payload["severity"], summary=payload["summary"],
                )
                self.incidents.append(current)
            else:
                # A repeat trigger updates the open alert; it never opens a second incident.
                current.severity, current.summary = payload["severity"], payload["summary"]
            current.events.append(public)
        elif current is not None and current.is_open:
            current.status = "acknowledged" if action == "acknowledge" else "resolved"
            current.events.append(public)
        # An acknowledge/resolve for an unknown or closed key is accepted and ignored, as PagerDuty does.
        return dedup_key


def _invalid(errors: list[str]) -> dict[str, Any]:
    return {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
