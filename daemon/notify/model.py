"""What a notification is: alert kinds, the routing matrix, the Notifier Protocol and its result.

Everything here is data or a pure function; nothing does I/O. The matrix is the one in DESIGN.md
("Notifications") and the staging runbook (6.2 알림 설정: deploy start/complete → Slack; deploy
failed, rollback executed → Slack + PagerDuty), written down once so the pipeline, the notifiers and
the tests all read the same table.
"""

from __future__ import annotations

import email.utils
import enum
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from daemon.rules.model import NOTIFY_PAGEABLE_KINDS, NOTIFY_ROUTE_CHANNELS, NOTIFY_ROUTE_KINDS


class NotifyError(Exception):
    """Base of every exception the notify package raises (see the tree in `daemon.notify`)."""


class NotifyConfigError(NotifyError, ValueError):
    """Notifier configuration rollguard cannot use: unknown notifier, unknown key, missing value."""


class SecretSourceError(NotifyConfigError):
    """A secret could not be read from where the configuration says it is (never contains the secret)."""


class AlertKind(enum.StrEnum):
    """Every event rollguard tells people about; the values are stable (metrics labels, PagerDuty `class`)."""

    ROLLOUT_STARTED = "rollout_started"
    """A Deployment began rolling out a new revision; opens the rollout's Slack thread."""
    ROLLOUT_COMPLETE = "rollout_complete"
    """The rollout finished and its analysis passed."""
    NOTIFY_MATCHED = "notify_matched"
    """A rule with `action: notify` matched (for example a few error lines in the logs)."""
    REVIEW_NEEDED = "review_needed"
    """A rule with `action: review` matched, or a signal stayed inconclusive: a human must decide."""
    ROLLOUT_FAILED = "rollout_failed"
    """The progress deadline passed (ProgressDeadlineExceeded) or the analysis failed."""
    ROLLBACK_STARTED = "rollback_started"
    """rollguard executed a rollback (the undo was written to the cluster, or would be in dry-run)."""
    ROLLBACK_COMPLETED = "rollback_completed"
    """The rollback's own rollout finished: the previous revision serves again."""
    ROLLBACK_FAILED = "rollback_failed"
    """The rollback could not be written or did not finish."""
    RECOVERED = "recovered"
    """The rollout is healthy again; resolves the PagerDuty incident."""
    SUPERSEDED = "superseded"
    """A newer rollout of the Deployment started before this one's analysis reached a verdict."""
    REVIEW_CLOSED = "review_closed"
    """A human denied the rollback a review asked for: the revision stays, rollguard stops judging it."""
    ANALYSIS_ERROR = "analysis_error"
    """rollguard's own analysis of a rollout failed unexpectedly; it restarts it, but a human should know."""


KIND_LABELS: Mapping[AlertKind, str] = MappingProxyType(
    {
        AlertKind.ROLLOUT_STARTED: "Rollout started",
        AlertKind.ROLLOUT_COMPLETE: "Rollout complete",
        AlertKind.NOTIFY_MATCHED: "Rule matched",
        AlertKind.REVIEW_NEEDED: "Review needed",
        AlertKind.ROLLOUT_FAILED: "Rollout failed",
        AlertKind.ROLLBACK_STARTED: "Rollback executed",
        AlertKind.ROLLBACK_COMPLETED: "Rollback completed",
        AlertKind.ROLLBACK_FAILED: "Rollback failed",
        AlertKind.RECOVERED: "Recovered",
        AlertKind.SUPERSEDED: "Superseded",
        AlertKind.REVIEW_CLOSED: "Review closed",
        AlertKind.ANALYSIS_ERROR: "Analysis error",
    }
)
"""Short human labels, for message headers and console lines."""


class Channel(enum.StrEnum):
    """Where a notifier delivers. SLACK and PAGERDUTY follow the matrix; LOG takes every alert."""

    SLACK = "slack"
    PAGERDUTY = "pagerduty"
    LOG = "log"
    """The console and the do-nothing notifier: local output that wants the whole stream."""


ROUTES: Mapping[AlertKind, frozenset[Channel]] = MappingProxyType(
    {
        AlertKind.ROLLOUT_STARTED: frozenset({Channel.SLACK}),
        AlertKind.ROLLOUT_COMPLETE: frozenset({Channel.SLACK}),
        AlertKind.NOTIFY_MATCHED: frozenset({Channel.SLACK}),
        AlertKind.REVIEW_NEEDED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.ROLLOUT_FAILED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.ROLLBACK_STARTED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.ROLLBACK_COMPLETED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.ROLLBACK_FAILED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.RECOVERED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.SUPERSEDED: frozenset({Channel.SLACK}),
        AlertKind.REVIEW_CLOSED: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
        AlertKind.ANALYSIS_ERROR: frozenset({Channel.SLACK, Channel.PAGERDUTY}),
    }
)
"""The notification matrix: which channels each kind of alert goes to (LOG channels get everything)."""


RouteOverrides = Mapping[str, frozenset[str]]
"""A policy's `notify.routes`: AlertKind value → channel names (slack, pagerduty), replacing the matrix's row."""


def is_routed(kind: AlertKind, channel: Channel, overrides: RouteOverrides | None = None) -> bool:
    """Whether an alert of `kind` goes to a notifier delivering to `channel`, given a policy's overrides."""
    if channel is Channel.LOG:
        return True
    if overrides is not None and kind.value in overrides:
        return channel.value in overrides[kind.value]
    return channel in ROUTES[kind]


PagerDutySeverity = Literal["critical", "error", "warning", "info"]


@dataclass(frozen=True)
class PagerDutyAction:
    """What an alert kind does in PagerDuty: open/update an incident at a severity, or resolve it."""

    event_action: Literal["trigger", "resolve"]
    severity: PagerDutySeverity | None = None
    """Set for `trigger`; None for `resolve` (PagerDuty ignores a payload on resolve)."""


PAGERDUTY_ACTIONS: Mapping[AlertKind, PagerDutyAction] = MappingProxyType(
    {
        AlertKind.REVIEW_NEEDED: PagerDutyAction("trigger", "warning"),
        AlertKind.ROLLOUT_FAILED: PagerDutyAction("trigger", "critical"),
        AlertKind.ROLLBACK_STARTED: PagerDutyAction("trigger", "critical"),
        AlertKind.ROLLBACK_COMPLETED: PagerDutyAction("trigger", "critical"),
        AlertKind.ROLLBACK_FAILED: PagerDutyAction("trigger", "critical"),
        AlertKind.RECOVERED: PagerDutyAction("resolve"),
        AlertKind.REVIEW_CLOSED: PagerDutyAction("resolve"),
        AlertKind.ANALYSIS_ERROR: PagerDutyAction("trigger", "warning"),
    }
)
"""PagerDuty event per routed kind. Every kind routed to PAGERDUTY in `ROUTES` has an entry."""

assert {k for k, chans in ROUTES.items() if Channel.PAGERDUTY in chans} == set(PAGERDUTY_ACTIONS), (
    "ROUTES and PAGERDUTY_ACTIONS disagree about which kinds page"
)

# The rule files name kinds and channels in `notify.routes`; the loader checks them against these
# lists (rules/ must not import notify), so they must say what this module says.
assert set(NOTIFY_ROUTE_KINDS) == {k.value for k in AlertKind}, "rules' NOTIFY_ROUTE_KINDS != AlertKind"
assert {k.value for k in PAGERDUTY_ACTIONS} == NOTIFY_PAGEABLE_KINDS, (
    "rules' NOTIFY_PAGEABLE_KINDS and PAGERDUTY_ACTIONS disagree about which kinds can page"
)
assert set(NOTIFY_ROUTE_CHANNELS) == {Channel.SLACK.value, Channel.PAGERDUTY.value}

Value = float | bool | None
"""A measured value as rules see it: a number, a boolean check result, or None (no data)."""


def rollout_key_for(namespace: str, deployment: str, revision: int) -> str:
    """The stable identity of one rollout, e.g. `staging/backend/7`."""
    return f"{namespace}/{deployment}/{revision}"


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One thing to tell people, as the actions layer builds it. Immutable; mappings are read-only copies."""

    kind: AlertKind
    namespace: str
    deployment: str
    revision: int
    """The Deployment revision (`deployment.kubernetes.io/revision`) the alert is about."""
    pod_template_hash: str
    """The new ReplicaSet's `pod-template-hash` label."""
    rollout_key: str
    """Stable per rollout (`rollout_key_for`): Slack thread, PagerDuty dedup key and dedup all key on it."""
    title: str
    """One line, e.g. "Rolled back staging/backend to revision 6"."""
    summary: str
    """A few sentences for humans; PagerDuty gets at most 1024 characters of title + summary."""
    rule: str | None = None
    """The rule that matched, if a rule decided."""
    action: str | None = None
    """The rule's action (rollback, review, notify), if any."""
    values: Mapping[str, Value] = field(default_factory=dict)
    """Signal values at decision time, by signal name."""
    baselines: Mapping[str, Value] = field(default_factory=dict)
    """The same signals for the previous revision, measured when the rollout started."""
    evidence: tuple[str, ...] = ()
    """Short lines a human can check: matching log lines, failed checks, queries."""
    approve_command: str | None = None
    """For REVIEW_NEEDED: the exact command that approves the rollback."""
    dry_run: bool = False
    """The daemon decided but wrote nothing to the cluster."""
    at: float = field(default_factory=time.time)
    """When it happened, Unix epoch seconds."""
    policy: str | None = None
    """The RollbackPolicy (`metadata.name`) that governs the rollout: picks its targets and routes.
    None: the daemon-wide targets and the default matrix."""

    def __post_init__(self) -> None:
        if not self.rollout_key:
            raise ValueError("Alert.rollout_key must not be empty")
        if self.revision < 0:
            raise ValueError(f"Alert.revision must be >= 0, not {self.revision}")
        # Read-only copies: an alert sits in queues while the caller's dicts may change.
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "baselines", MappingProxyType(dict(self.baselines)))
        object.__setattr__(self, "evidence", tuple(self.evidence))

    @property
    def source(self) -> str:
        """`<namespace>/<deployment>`: PagerDuty's `source`."""
        return f"{self.namespace}/{self.deployment}"

    @property
    def dedup_key(self) -> str:
        """`rollguard/<ns>/<deploy>/<revision>`: one PagerDuty incident per rollout, however often it is sent."""
        return f"rollguard/{self.namespace}/{self.deployment}/{self.revision}"

    @property
    def identity(self) -> tuple[str, AlertKind, str | None]:
        """What the pipeline's dedup stage compares: the same rollout, kind and rule is one alert."""
        return (self.rollout_key, self.kind, self.rule)


@dataclass(frozen=True)
class SendResult:
    """What a notifier reports for one delivery attempt; the pipeline decides what to do with it."""

    ok: bool
    retry: bool = False
    """Only meaningful when not ok: the failure is transient and the same alert may be sent again."""
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (Retry-After), if it said."""
    error: str | None = None
    """A redacted, human-readable reason; never contains a secret."""

    @classmethod
    def success(cls) -> SendResult:
        return cls(ok=True)

    @classmethod
    def retry_later(cls, error: str, *, retry_after: float | None = None) -> SendResult:
        return cls(ok=False, retry=True, retry_after=retry_after, error=error)

    @classmethod
    def give_up(cls, error: str) -> SendResult:
        return cls(ok=False, retry=False, error=error)


def classify_status(status: int, *, error: str, retry_after: float | None = None) -> SendResult:
    """The one place an HTTP status becomes ok / retry / give up.

    2xx is delivered; 429 (rate limited), 408 (request timeout) and 5xx are transient and retried,
    honouring `retry_after`; every other status (4xx: bad request, bad credentials, unknown channel)
    will fail the same way again, so retrying would only delay the error.
    """
    if 200 <= status < 300:
        return SendResult.success()
    if status in (408, 429) or 500 <= status < 600:
        return SendResult.retry_later(error, retry_after=retry_after)
    return SendResult.give_up(error)


def transport_failure(error: str) -> SendResult:
    """Connection refused/reset, DNS, TLS handshake or timeout: nothing was answered, so try again."""
    return SendResult.retry_later(error)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@runtime_checkable
class Notifier(Protocol):
    """Delivers alerts to one place. Implementations: one per file (slack, pagerduty, console, nop).

    `send` never raises for delivery problems: it classifies them into a `SendResult` whose error
    has already been redacted. Retrying, dedup and fan-out are the pipeline's job, not the notifier's.
    """

    name: str
    """Unique label: logs and the `notifier` metrics label."""
    channel: Channel
    """Which column of the matrix this notifier serves."""

    async def send(self, alert: Alert) -> SendResult:
        """Deliver one alert once (no retries inside)."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once by the pipeline's `stop()`."""
        ...


class ThreadStore(Protocol):
    """Where a rollout's Slack thread is: the root message's channel ID and `ts`, by rollout key.

    Synchronous on purpose: it is read and written in the middle of a delivery. A store backed by
    the cluster keeps an in-memory copy and writes through in the background.
    """

    def get(self, rollout_key: str) -> tuple[str, str] | None:
        """(channel ID, ts) of the rollout's root message, or None when it has none yet."""
        ...

    def put(self, rollout_key: str, channel: str, ts: str) -> None:
        """Remember the root message just posted for `rollout_key`."""
        ...


class InMemoryThreadStore:
    """The default `ThreadStore`: a bounded map (the oldest rollout forgotten first); lost on restart."""

    def __init__(self, capacity: int = 4096) -> None:
        """`capacity`: how many rollouts' root messages are remembered."""
        self._capacity = capacity
        self._roots: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def get(self, rollout_key: str) -> tuple[str, str] | None:
        root = self._roots.get(rollout_key)
        if root is not None:
            self._roots.move_to_end(rollout_key)
        return root

    def put(self, rollout_key: str, channel: str, ts: str) -> None:
        self._roots[rollout_key] = (channel, ts)
        self._roots.move_to_end(rollout_key)
        while len(self._roots) > self._capacity:
            self._roots.popitem(last=False)
