"""Slack notifiers: bot-token mode (one thread per rollout) and incoming-webhook mode (no threads).

Bot-token mode (`SlackNotifier`, Web API through `daemon.notify.slack_api.SlackWebClient`):
  * the first alert of a rollout posts the root message (chat.postMessage, blocks + text fallback)
    and remembers its channel ID and `ts`;
  * every later alert of that rollout is a reply in the thread (`thread_ts`), and the root is
    edited (chat.update) to show the rollout's current status, so the channel reads as one line
    per rollout.
  A retry after a failed chat.update does not post the reply a second time.
  Where each rollout's root message is (channel ID, ts) lives in a `ThreadStore`: the in-memory one
  by default; a store that outlives the process (the Deployment's annotation) keeps a rollout in one
  thread across restarts.

Webhook mode (`SlackWebhookNotifier`, `SlackWebhookClient`): one message per alert. Incoming webhooks
cannot thread or edit, which is why bot-token mode is the recommended one.

Neither client retries: the pipeline owns retrying (with backoff under one deadline). Errors are
classified here, with `daemon.notify.model.classify_status` for HTTP statuses, `_RETRYABLE_ERRORS`
for Slack's transient error codes and `transport_failure` when nothing was answered, and redacted
(the token, the webhook URL and its path) before they leave.
"""

from __future__ import annotations

import datetime
import math
import ssl
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from daemon.notify.model import (
    KIND_LABELS,
    Alert,
    AlertKind,
    Channel,
    InMemoryThreadStore,
    SendResult,
    ThreadStore,
    Value,
    classify_status,
    parse_retry_after,
    transport_failure,
)
from daemon.notify.secrets import Redactor
from daemon.notify.slack_api import SlackCallError, SlackWebClient, SlackWebhookClient

__all__ = ["InMemoryThreadStore", "SlackNotifier", "SlackWebhookNotifier", "ThreadStore"]

DEFAULT_BASE_URL = "https://slack.com/api/"

# Web API errors that come back as HTTP 200 + ok:false yet are transient (Slack's documented list).
_RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

_EMOJI: Mapping[AlertKind, str] = {
    AlertKind.ROLLOUT_STARTED: ":rocket:",
    AlertKind.ROLLOUT_COMPLETE: ":white_check_mark:",
    AlertKind.NOTIFY_MATCHED: ":information_source:",
    AlertKind.REVIEW_NEEDED: ":eyes:",
    AlertKind.ROLLOUT_FAILED: ":x:",
    AlertKind.ROLLBACK_STARTED: ":rewind:",
    AlertKind.ROLLBACK_COMPLETED: ":leftwards_arrow_with_hook:",
    AlertKind.ROLLBACK_FAILED: ":rotating_light:",
    AlertKind.SUPERSEDED: ":fast_forward:",
    AlertKind.REVIEW_CLOSED: ":no_entry_sign:",
    AlertKind.ANALYSIS_ERROR: ":warning:",
    AlertKind.RECOVERED: ":large_green_circle:",
}

# Slack's limits (Block Kit reference): section text 3000, header 150, 50 blocks per message.
_SECTION_LIMIT = 3000
_HEADER_LIMIT = 150
_FALLBACK_LIMIT = 3000


def _escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as control characters (Slack's formatting guide)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format_value(value: Value) -> str:
    if value is None:
        return "no data"
    if isinstance(value, bool):
        return "ok" if value else "FAILED"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, _SECTION_LIMIT)}]}


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fallback_text(alert: Alert) -> str:
    """The plain `text` Slack shows in notifications and where blocks cannot render."""
    dry = " [dry-run]" if alert.dry_run else ""
    text = f"{KIND_LABELS[alert.kind]}{dry}: {alert.title} ({alert.source} rev {alert.revision})"
    return _clip(text, _FALLBACK_LIMIT)


def alert_blocks(alert: Alert) -> list[dict[str, Any]]:
    """The message for one alert: what happened, the numbers, the evidence, what to do."""
    dry = " _(dry-run: nothing was changed)_" if alert.dry_run else ""
    headline = f"{_EMOJI[alert.kind]} *{KIND_LABELS[alert.kind]}*{dry}: {_escape(alert.title)}"
    blocks: list[dict[str, Any]] = [_section(f"{headline}\n{_escape(alert.summary)}")]
    if alert.values:
        lines = []
        for name, value in alert.values.items():
            base = alert.baselines.get(name)
            tail = f"   (baseline {_format_value(base)})" if name in alert.baselines else ""
            lines.append(f"{name} = {_format_value(value)}{tail}")
        blocks.append(_section("```" + _escape("\n".join(lines)) + "```"))
    if alert.evidence:
        blocks.append(_section("*Evidence*\n" + "\n".join(f"• {_escape(line)}" for line in alert.evidence)))
    if alert.approve_command:
        blocks.append(_section("*To approve the rollback*\n```" + _escape(alert.approve_command) + "```"))
    facts = [f"rule `{_escape(alert.rule)}`" if alert.rule else None,
             f"action `{_escape(alert.action)}`" if alert.action else None,
             f"pod-template-hash `{_escape(alert.pod_template_hash)}`", _when(alert.at)]
    blocks.append(_context(" · ".join(f for f in facts if f)))
    return blocks


def root_blocks(alert: Alert, *, first: Alert | None = None) -> list[dict[str, Any]]:
    """The thread's root: which rollout, its status as of `alert`, then the first alert's details.

    The root is edited as the rollout moves on; `first` keeps the opening alert's details in it.
    """
    dry = " (dry-run)" if alert.dry_run else ""
    return [
        *_root_status(alert, dry),
        {"type": "divider"},
        *alert_blocks(first or alert),
    ]


def _root_status(alert: Alert, dry: str) -> list[dict[str, Any]]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(
            f"{alert.source} · revision {alert.revision}{dry}", _HEADER_LIMIT)}},
        _section(f"*Status:* {_EMOJI[alert.kind]} {KIND_LABELS[alert.kind]} — {_escape(alert.title)}"),
        _context(f"rollout `{_escape(alert.rollout_key)}` · updated {_when(alert.at)} · details in the thread"),
    ]


def root_text(alert: Alert) -> str:
    text = f"{alert.source} revision {alert.revision}: {KIND_LABELS[alert.kind]} — {alert.title}"
    return _clip(text, _FALLBACK_LIMIT)


@dataclass(frozen=True)
class _Thread:
    channel: str
    """The channel ID Slack answered with (chat.update needs the ID, not the name)."""
    ts: str
    first: Alert | None
    """The alert that opened the thread, whose details stay in the root; None when the thread was
    opened by an earlier process (the store keeps only where the root is)."""


def _classify_call_error(exc: SlackCallError, redactor: Redactor) -> SendResult:
    message = redactor.redact(f"slack {exc.method} failed: HTTP {exc.status}, {exc.detail}")
    retry_after = parse_retry_after(exc.retry_after)
    if exc.status != 200:
        return classify_status(exc.status, error=message, retry_after=retry_after)
    if exc.code is None:
        # A 200 whose body is not Slack's JSON: something in between mangled the answer (a proxy, a
        # cut connection). Whether the call took effect is unknown; a repeated message beats a lost one.
        return SendResult.retry_later(message)
    if exc.code in _RETRYABLE_ERRORS:
        return SendResult.retry_later(message, retry_after=retry_after)
    return SendResult.give_up(message)


class SlackNotifier:
    """Bot-token mode: one thread per rollout, root message kept current. See the module docstring."""

    name = "slack"
    channel = Channel.SLACK

    def __init__(
        self,
        *,
        token: str,
        channel: str,
        redactor: Redactor,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        max_threads: int = 4096,
        thread_store: ThreadStore | None = None,
        name: str = "slack",
    ) -> None:
        """`channel`: name ("#deploys") or ID; `timeout`: seconds per HTTP call; `max_threads`: how many
        rollouts' opening alerts are remembered (the oldest is forgotten first); `thread_store`: where
        root messages are recorded (default: in memory, `max_threads` of them); `name`: the metrics
        and log label (unique per pipeline)."""
        self.name = name
        self._target = channel
        self._redactor = redactor
        redactor.add(token)
        self._client = SlackWebClient(token=token, base_url=base_url, timeout=timeout, ssl_context=ssl_context)
        self._max_threads = max_threads
        self._store: ThreadStore = thread_store if thread_store is not None else InMemoryThreadStore(max_threads)
        self._first: OrderedDict[str, Alert] = OrderedDict()
        # Replies already posted whose root update failed: a retry must not post them again.
        self._replied: OrderedDict[tuple[str, AlertKind, str | None, float], None] = OrderedDict()

    async def send(self, alert: Alert) -> SendResult:
        try:
            await self._deliver(alert)
        except SlackCallError as exc:
            return _classify_call_error(exc, self._redactor)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError) as exc:
            return transport_failure(self._redactor.redact(f"slack: {self._redactor.describe(exc)}"))
        except (aiohttp.ClientError, ValueError) as exc:
            return SendResult.give_up(self._redactor.redact(f"slack: {self._redactor.describe(exc)}"))
        return SendResult.success()

    async def _deliver(self, alert: Alert) -> None:
        client = self._client
        thread = self._thread(alert.rollout_key)
        if thread is None:
            answer = await client.call("chat.postMessage", {
                "channel": self._target, "text": root_text(alert), "blocks": root_blocks(alert),
                "unfurl_links": False, "unfurl_media": False,
            })
            channel, ts = answer.get("channel"), answer.get("ts")
            if not isinstance(channel, str) or not isinstance(ts, str):
                raise ValueError(f"chat.postMessage answered ok without a channel and ts: {channel!r}, {ts!r}")
            self._store.put(alert.rollout_key, channel, ts)
            self._remember_first(alert)
            return
        step = (alert.rollout_key, alert.kind, alert.rule, alert.at)
        if step not in self._replied:
            await client.call("chat.postMessage", {
                "channel": thread.channel, "thread_ts": thread.ts, "text": fallback_text(alert),
                "blocks": alert_blocks(alert), "unfurl_links": False, "unfurl_media": False,
            })
            self._replied[step] = None
            while len(self._replied) > self._max_threads:
                self._replied.popitem(last=False)
        await client.call("chat.update", {
            "channel": thread.channel, "ts": thread.ts, "text": root_text(alert),
            "blocks": root_blocks(alert, first=thread.first),
        })
        self._replied.pop(step, None)

    def _thread(self, rollout_key: str) -> _Thread | None:
        root = self._store.get(rollout_key)
        if root is None:
            return None
        first = self._first.get(rollout_key)
        if first is not None:
            self._first.move_to_end(rollout_key)
        return _Thread(channel=root[0], ts=root[1], first=first)

    def _remember_first(self, alert: Alert) -> None:
        self._first[alert.rollout_key] = alert
        while len(self._first) > self._max_threads:
            self._first.popitem(last=False)

    async def aclose(self) -> None:
        await self._client.aclose()


class SlackWebhookNotifier:
    """Incoming-webhook mode: one message per alert, no threads (webhooks cannot reply or edit)."""

    name = "slack"
    channel = Channel.SLACK

    def __init__(
        self,
        *,
        url: str,
        redactor: Redactor,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "slack",
    ) -> None:
        """`url`: the webhook URL (a secret: its path authorises posting); `timeout`: seconds per call;
        `name`: the metrics and log label (unique per pipeline)."""
        self.name = name
        self._redactor = redactor
        redactor.add(url)
        # The path alone (as error messages sometimes show it) is the secret too.
        path = urllib.parse.urlsplit(url).path
        redactor.add(path)
        redactor.add(path.rsplit("/", 1)[-1])
        self._client = SlackWebhookClient(url=url, timeout=timeout, ssl_context=ssl_context)

    async def send(self, alert: Alert) -> SendResult:
        try:
            answer = await self._client.send({
                "text": fallback_text(alert), "blocks": alert_blocks(alert),
                "unfurl_links": False, "unfurl_media": False,
            })
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError) as exc:
            return transport_failure(self._redactor.redact(f"slack webhook: {self._redactor.describe(exc)}"))
        except (aiohttp.ClientError, ValueError) as exc:
            return SendResult.give_up(self._redactor.redact(f"slack webhook: {self._redactor.describe(exc)}"))
        body = answer.text.strip()[:200]
        return classify_status(
            answer.status,
            error=self._redactor.redact(f"slack webhook failed: HTTP {answer.status}, {body or 'no body'}"),
            retry_after=parse_retry_after(answer.retry_after),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
