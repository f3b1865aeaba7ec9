"""Alerts from Alertmanager: what was pushed (webhook), what is pulled (`/api/v2/alerts`), and who to wake.

* `parse_webhook` / `parse_api_alerts` turn Alertmanager's documented JSON (webhook payload version
  4; API v2 `gettableAlerts`) into `Alert`s, refusing what is malformed or over the bounds below
  (`AlertPayloadError`, whose message never quotes the payload).
* `AlertHub` keeps the firing alerts pushed by the webhook, forgets resolved ones, and wakes the
  analyses a pushed alert is relevant to (`subscribe` hands each analysis an `asyncio.Event`).
* `AlertmanagerClient` reads the active, unsilenced, uninhibited alerts; an unreachable or
  misbehaving Alertmanager is `AlertmanagerUnavailable`, never "no alerts".
* `counted` says which alerts a signal counts for a rollout: firing, not ended, matching every
  matcher, and belonging to the rollout by the signal's scope; for the deployment and namespace
  scopes also started after the rollout did (an alert already firing before the deploy is not
  evidence against it).

Exceptions: `AlertPayloadError` (ValueError) for bad input; `AlertmanagerUnavailable` (Exception)
for the pull.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from daemon.clock import Clock
from daemon.measurement import SignalContext
from daemon.rules.matchers import matches_all
from daemon.rules.model import AlertScope, AlertsSignal

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest webhook body or `/api/v2/alerts` answer read, in bytes."""
MAX_ALERTS_PER_PAYLOAD = 1000
"""Most alerts read from one webhook or one pull (Alertmanager's `max_alerts` should be at most this)."""
MAX_STORED_ALERTS = 10_000
"""Most pushed firing alerts kept; past it the oldest received are forgotten (the pull still sees them)."""
MAX_LABELS = 64
"""Most labels (and most annotations) read per alert."""
MAX_LABEL_CHARS = 1024
"""Longest label or annotation name or value kept, in characters (longer ones are cut)."""

_ZERO_TIME = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"(\.\d{6})\d+")


class AlertPayloadError(ValueError):
    """A webhook body or API answer that is not what Alertmanager sends; the message says what is wrong."""


class AlertmanagerUnavailable(Exception):
    """Alertmanager could not be asked, or answered something unusable; the message says which."""


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager knows it."""

    fingerprint: str
    """Alertmanager's identity of the alert (a hash of its labels)."""
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    """When it started firing, epoch seconds."""
    ends_at: float | None
    """When it ends or ended, epoch seconds; None when open-ended."""
    firing: bool
    """False for a resolved alert."""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "(no alertname)")

    def describe(self) -> str:
        """`NAME: summary` for notifications (the summary, else the description annotation)."""
        text = self.annotations.get("summary") or self.annotations.get("description") or ""
        return f"{self.name}: {text}"[:300] if text else self.name


def _epoch(value: object, what: str) -> float | None:
    if value is None or value == "" or value == _ZERO_TIME:
        return None
    if not isinstance(value, str):
        raise AlertPayloadError(f"{what} is not a timestamp")
    text = _FRACTION.sub(r"\1", value.replace("Z", "+00:00"))
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise AlertPayloadError(f"{what} is not an RFC 3339 timestamp") from None
    return None if stamp.year <= 1 else stamp.timestamp()


def _strings(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AlertPayloadError(f"{what} is not an object")
    if len(value) > MAX_LABELS:
        raise AlertPayloadError(f"{what} has {len(value)} entries, over the limit of {MAX_LABELS}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise AlertPayloadError(f"{what}: the value of a key is not a string")
        out[str(key)[:MAX_LABEL_CHARS]] = item[:MAX_LABEL_CHARS]
    return out


def _alert(raw: object, index: int, *, firing: bool | None) -> Alert:
    what = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise AlertPayloadError(f"{what} is not an object")
    labels = _strings(raw.get("labels"), f"{what}.labels")
    annotations = _strings(raw.get("annotations"), f"{what}.annotations")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        fingerprint = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
    if firing is None:  # the webhook's own status field
        status = raw.get("status")
        if status not in ("firing", "resolved"):
            raise AlertPayloadError(f"{what}.status is neither firing nor resolved")
        firing = status == "firing"
    starts_at = _epoch(raw.get("startsAt"), f"{what}.startsAt")
    return Alert(fingerprint[:64], labels, annotations, starts_at or 0.0, _epoch(raw.get("endsAt"), f"{what}.endsAt"),
                 firing)


def _alert_list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise AlertPayloadError(f"{what} is not a list")
    if len(value) > MAX_ALERTS_PER_PAYLOAD:
        raise AlertPayloadError(f"{what} has {len(value)} alerts, over the limit of {MAX_ALERTS_PER_PAYLOAD}")
    return value


def _json(body: bytes) -> Any:
    if len(body) > MAX_PAYLOAD_BYTES:
        raise AlertPayloadError(f"the body is {len(body)} bytes, over the limit of {MAX_PAYLOAD_BYTES}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise AlertPayloadError("the body is not JSON") from None


def parse_webhook(body: bytes) -> list[Alert]:
    """The alerts of an Alertmanager webhook body (payload version 4); AlertPayloadError otherwise."""
    payload = _json(body)
    if not isinstance(payload, dict):
        raise AlertPayloadError("the body is not a JSON object")
    if payload.get("version") != "4":
        raise AlertPayloadError('the payload version is not "4" (send from Alertmanager\'s webhook_configs)')
    raw = _alert_list(payload.get("alerts"), "alerts")
    return [_alert(item, i, firing=None) for i, item in enumerate(raw)]


def parse_api_alerts(body: bytes) -> list[Alert]:
    """The alerts of a `GET /api/v2/alerts` answer (all active: they are asked for with active=true)."""
    raw = _alert_list(_json(body), "the answer")
    return [_alert(item, i, firing=True) for i, item in enumerate(raw)]


def belongs(alert: Alert, ctx: SignalContext, signal: AlertsSignal) -> bool:
    """Whether `alert` is about the rollout described by `ctx`, by the signal's scope and label names."""
    names = signal.labels
    if alert.labels.get(names.namespace) != ctx.namespace:
        return False
    if signal.scope is AlertScope.POD:
        return alert.labels.get(names.pod, "").startswith(ctx.pod_prefix)
    # A Deployment or namespace existed before this rollout: only alerts that started during it count.
    if alert.starts_at < ctx.rollout_started_at:
        return False
    return signal.scope is AlertScope.NAMESPACE or alert.labels.get(names.deployment) == ctx.deployment


def counted(alerts: Iterable[Alert], ctx: SignalContext, signal: AlertsSignal, *, now: float) -> list[Alert]:
    """The alerts `signal` counts for the rollout of `ctx` at `now` (epoch seconds), by start time."""
    out = [a for a in alerts
           if a.firing and (a.ends_at is None or a.ends_at > now)
           and matches_all(signal.matchers, a.labels) and belongs(a, ctx, signal)]
    return sorted(out, key=lambda a: (a.starts_at, a.name, a.fingerprint))


@dataclass(frozen=True)
class _Subscriber:
    ctx: SignalContext
    signals: tuple[AlertsSignal, ...]


class AlertHub:
    """The pushed alerts and the analyses to wake when one arrives (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pushed: dict[str, tuple[Alert, float]] = {}
        self._events: weakref.WeakValueDictionary[int, asyncio.Event] = weakref.WeakValueDictionary()
        self._subscribers: dict[int, _Subscriber] = {}

    def subscribe(self, ctx: SignalContext, signals: Sequence[AlertsSignal]) -> asyncio.Event:
        """An event set whenever a pushed firing alert counts for one of `signals` of `ctx`'s rollout.

        The subscription lasts as long as the caller keeps the event."""
        event = asyncio.Event()
        key = id(event)
        self._events[key] = event
        self._subscribers[key] = _Subscriber(ctx, tuple(signals))
        weakref.finalize(event, self._subscribers.pop, key, None)
        return event

    def receive(self, alerts: Sequence[Alert]) -> int:
        """Store firing alerts, forget resolved ones; returns how many analyses were woken."""
        now = self._clock.now()
        for alert in alerts:
            self._pushed.pop(alert.fingerprint, None)
            if alert.firing:
                self._pushed[alert.fingerprint] = (alert, now)
        while len(self._pushed) > MAX_STORED_ALERTS:
            del self._pushed[next(iter(self._pushed))]  # dicts keep insertion order: the oldest first
        firing = [a for a in alerts if a.firing]
        woken = 0
        for key, subscriber in list(self._subscribers.items()):
            event = self._events.get(key)
            if event is None or not firing:
                continue
            if any(counted(firing, subscriber.ctx, signal, now=now) for signal in subscriber.signals):
                event.set()
                woken += 1
        return woken

    def pushed(self) -> list[Alert]:
        """The pushed alerts still believed firing."""
        return [alert for alert, _ in self._pushed.values()]

    def reconcile(self, active: Sequence[Alert], *, asked_at: float) -> None:
        """After a pull asked at `asked_at` (epoch seconds): forget pushed alerts received before it that
        Alertmanager no longer lists as active (their resolve was not pushed, or was lost)."""
        listed = {a.fingerprint for a in active}
        for fingerprint, (_, received) in list(self._pushed.items()):
            if received < asked_at and fingerprint not in listed:
                del self._pushed[fingerprint]


class AlertmanagerClient:
    """Reads Alertmanager's active alerts; answers younger than `max_age` seconds are shared between callers."""

    def __init__(self, url: str, session: aiohttp.ClientSession, *, clock: Clock, timeout: float = 5.0,
                 max_age: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._clock = clock
        self._timeout = timeout
        self._max_age = max_age
        self._last: tuple[float, list[Alert]] | None = None
        self._inflight: asyncio.Task[tuple[float, list[Alert]]] | None = None

    async def active(self) -> tuple[float, list[Alert]]:
        """(when it was asked, epoch seconds; the active alerts); AlertmanagerUnavailable when it cannot tell."""
        if self._last is not None and self._clock.now() - self._last[0] <= self._max_age:
            return self._last
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        # shield: one caller's timeout must not cancel the answer the others wait for
        result = await asyncio.shield(self._inflight)
        self._last = result
        return result

    async def _fetch(self) -> tuple[float, list[Alert]]:
        asked_at = self._clock.now()
        url = f"{self.url}/api/v2/alerts"
        params = {"active": "true", "silenced": "false", "inhibited": "false"}
        try:
            async with self._session.get(url, params=params,
                                         timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
                body = await resp.content.read(MAX_PAYLOAD_BYTES + 1)
                status = resp.status
        except TimeoutError:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url} gave no answer within {self._timeout:g}s") \
                from None
        except aiohttp.ClientError as exc:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url} is unreachable ({type(exc).__name__})") \
                from None
        if status != 200:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url} answered HTTP {status} to /api/v2/alerts")
        try:
            return asked_at, parse_api_alerts(body)
        except AlertPayloadError as exc:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url} answered an unusable alert list: {exc}") \
                from None
