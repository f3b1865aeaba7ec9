"""PagerDuty notifier: Events API v2 through the official `pagerduty` package.

One incident per rollout: every event carries `dedup_key = rollguard/<ns>/<deploy>/<revision>`, so
a retried or repeated trigger updates the open incident instead of opening another, and RECOVERED
resolves it. Severity by kind comes from `daemon.notify.model.PAGERDUTY_ACTIONS`.

The package's client is synchronous (httpx2 underneath), so calls run in a worker thread with
`asyncio.to_thread`. Its built-in retry loops (unbounded on 429, sleeping in the thread) are
switched off: `postprocess` surfaces every non-2xx status at once and `max_network_attempts = 0`
surfaces the first network error, because the pipeline owns retrying under a deadline.

TLS: the client verifies certificates. `ssl_context` replaces the trust store for this client only
(a private CA, or the local test receiver's CA) — nothing process-wide such as SSL_CERT_FILE.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import importlib
import math
import ssl
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from httpx2 import Response

from daemon.notify.model import (
    PAGERDUTY_ACTIONS,
    Alert,
    Channel,
    NotifyConfigError,
    SendResult,
    Value,
    classify_status,
    parse_retry_after,
    transport_failure,
)
from daemon.notify.secrets import Redactor, redacting_logger

DEFAULT_BASE_URL = "https://events.pagerduty.com"
MAX_SUMMARY = 1024
"""PagerDuty truncates longer summaries; we cut first so the end is an ellipsis, not mid-word loss."""


class _HttpStatus(Exception):
    """A non-2xx answer, raised from inside the client so its own retry loop never runs."""

    def __init__(self, status: int, retry_after: str | None, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.body = body


@functools.cache
def _library() -> tuple[ModuleType, type[Any]]:
    """The PagerDuty client library and our client class, imported on first use: with httpx it weighs
    about 15 MiB, which a daemon without a PagerDuty target should not carry."""
    pagerduty = importlib.import_module("pagerduty")

    class _EventsClient(pagerduty.EventsApiV2Client):  # type: ignore[name-defined,misc]
        """EventsApiV2Client that reports every non-2xx response at once instead of retrying it."""

        timeout: float  # the base declares an int; httpx2 takes float seconds

        def postprocess(self, response: Response) -> None:
            # Called for every response before the client's retry logic looks at the status.
            if not response.is_success:
                raise _HttpStatus(response.status_code, response.headers.get("Retry-After"), response.text[:300])

    return pagerduty, _EventsClient


def _json_value(value: Value) -> Value | str:
    # JSON has no NaN/Infinity; PagerDuty would reject the whole event over one odd measurement.
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return value


def event_summary(alert: Alert) -> str:
    """`[ns/deploy rev N] title: summary`, at most 1024 characters."""
    text = f"[{alert.source} rev {alert.revision}] {alert.title}: {alert.summary}"
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def custom_details(alert: Alert) -> dict[str, Any]:
    """What the responder needs on the incident: rule, numbers, baseline, evidence, the approve command."""
    return {
        "kind": alert.kind.value,
        "rollout": alert.rollout_key,
        "revision": alert.revision,
        "pod_template_hash": alert.pod_template_hash,
        "rule": alert.rule,
        "action": alert.action,
        "values": {k: _json_value(v) for k, v in alert.values.items()},
        "baseline": {k: _json_value(v) for k, v in alert.baselines.items()},
        "evidence": list(alert.evidence),
        "approve_command": alert.approve_command,
        "dry_run": alert.dry_run,
    }


class PagerDutyNotifier:
    """Triggers and resolves one PagerDuty incident per rollout. See the module docstring."""

    name = "pagerduty"
    channel = Channel.PAGERDUTY

    def __init__(
        self,
        *,
        routing_key: str,
        redactor: Redactor,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "pagerduty",
    ) -> None:
        """`routing_key`: the integration's Events API v2 key; `timeout`: seconds per HTTP call;
        `ssl_context`: trust for this client only (None: the system's CAs); `name`: the metrics and
        log label (unique per pipeline; never the key)."""
        self.name = name
        self._redactor = redactor
        redactor.add(routing_key)
        kwargs: dict[str, Any] = {} if ssl_context is None else {"verify": ssl_context}
        pagerduty, events_client = _library()
        try:
            client = events_client(routing_key, base_url=base_url, **kwargs)
        except pagerduty.UrlError as exc:
            raise NotifyConfigError(f"pagerduty: base URL {base_url!r}: {redactor.redact(str(exc))}") from None
        client.max_network_attempts = 0
        client.timeout = timeout
        client.log = redacting_logger("rollguard.notify.pagerduty.client", redactor)
        self._client = client

    async def send(self, alert: Alert) -> SendResult:
        pagerduty, _ = _library()
        action = PAGERDUTY_ACTIONS.get(alert.kind)
        if action is None:
            # The matrix never routes these kinds here; refusing loudly beats paging for them.
            return SendResult.give_up(f"pagerduty: {alert.kind.value} alerts are not sent to PagerDuty")
        try:
            if action.event_action == "resolve":
                await asyncio.to_thread(self._client.resolve, alert.dedup_key)
            else:
                assert action.severity is not None, f"{alert.kind} triggers without a severity"
                await asyncio.to_thread(
                    self._client.trigger,
                    summary=event_summary(alert),
                    source=alert.source,
                    dedup_key=alert.dedup_key,
                    severity=action.severity,
                    payload={
                        "timestamp": datetime.datetime.fromtimestamp(alert.at, tz=datetime.UTC).isoformat(),
                        "component": alert.deployment,
                        "group": alert.namespace,
                        "class": alert.kind.value,
                    },
                    custom_details=custom_details(alert),
                )
        except _HttpStatus as exc:
            body = exc.body.strip().replace("\n", " ")
            return classify_status(
                exc.status,
                error=self._redactor.redact(f"pagerduty {action.event_action} failed: HTTP {exc.status}: {body}"),
                retry_after=parse_retry_after(exc.retry_after),
            )
        except pagerduty.ServerHttpError as exc:
            # 2xx without the expected body: the server misbehaved; the dedup key makes a retry harmless.
            return SendResult.retry_later(self._describe(exc))
        except pagerduty.Error as exc:
            # With max_network_attempts = 0 this is the first connection error or timeout.
            return transport_failure(self._describe(exc))
        except (ValueError, TypeError) as exc:
            return SendResult.give_up(self._describe(exc))
        return SendResult.success()

    def _describe(self, exc: BaseException) -> str:
        cause = exc.__cause__
        text = self._redactor.describe(exc)
        if cause is not None:
            text += f" ({self._redactor.describe(cause)})"
        return f"pagerduty: {text}"

    async def aclose(self) -> None:
        # close() may wait on the connection pool's lock held by a worker thread; keep the loop free.
        await asyncio.to_thread(self._client.close)
