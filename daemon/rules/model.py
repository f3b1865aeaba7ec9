"""The typed, frozen form of a `RollbackPolicy` rule file; built only by `rules.loader`, read by everyone else.

Field names follow the YAML (`bakeTime` → `bake_time`; the rule's `for` is `for_`). Durations are
float seconds. Severity order of actions: rollback > review > notify > pass (`Action.severity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.rules.expressions import CompiledExpression, SignalType

# The signal providers' specs live in `daemon.rules.providers`; re-exported, so that this module stays
# the one place to read a rule file's form from.
from daemon.rules.providers import (
    AlertLabels as AlertLabels,
    AlertScope as AlertScope,
    AlertsSignal as AlertsSignal,
    BaselineMode as BaselineMode,
    HttpSignal as HttpSignal,
    JsonExpectation as JsonExpectation,
    LogsSignal as LogsSignal,
    PrometheusSignal as PrometheusSignal,
    Provider as Provider,
    WebSocketSignal as WebSocketSignal,
)

API_VERSION = "rollguard.io/v1"
KIND = "RollbackPolicy"


class Action(StrEnum):
    """What a rule (or the verdict) asks for; compare severity with `severity`, not with `<` on strings."""

    PASS = "pass"
    NOTIFY = "notify"
    REVIEW = "review"
    ROLLBACK = "rollback"

    @property
    def severity(self) -> int:
        """0 for pass up to 3 for rollback: the most severe action of all rules wins."""
        return _SEVERITY[self]


_SEVERITY = {Action.PASS: 0, Action.NOTIFY: 1, Action.REVIEW: 2, Action.ROLLBACK: 3}

RULE_ACTIONS = (Action.ROLLBACK, Action.REVIEW, Action.NOTIFY)
"""Actions a rule or `onFailure` may ask for."""


class Unavailable(StrEnum):
    """What a rule does while a signal it needs is INCONCLUSIVE (`onInconclusive`) or ERROR (`onError`).

    Never `rollback`: the loader refuses it, because an outage of the measuring side must not undo a deploy.
    See `rules.evaluate` for the exact timing.
    """

    HOLD = "hold"
    """Default. Neither fire nor reset the `for` timer; once the data has been missing for the rule's
    `for` duration, ask for review (or the rule's own action if that is milder)."""
    REVIEW = "review"
    """Ask a human at once."""
    NOTIFY = "notify"
    """Tell Slack at once."""
    IGNORE = "ignore"
    """Do nothing and keep the `for` timer, however long the data stays missing."""
    PASS = "pass"
    """Treat the condition as false: the `for` timer resets."""


@dataclass(frozen=True)
class Source:
    """Where something was defined, for error messages and logs."""

    file: str
    """The rule file as it was named to the loader."""
    line: int
    """1-based line."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Selector:
    """Which Deployments a policy applies to. Empty lists/maps do not restrict."""

    namespaces: tuple[str, ...] = ()
    """Namespaces the Deployment may be in; empty means any."""
    match_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels the Deployment must carry, all of them, with these values."""

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """True when a Deployment in `namespace` with `labels` is selected."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        return all(labels.get(key) == value for key, value in self.match_labels.items())


@dataclass(frozen=True)
class AnalysisTiming:
    """When measurements are taken, in seconds."""

    initial_delay: float = 30.0
    """Wait this long after the rollout starts before the first measurement."""
    interval: float = 15.0
    """Time between two evaluations."""
    bake_time: float = 600.0
    """Keep evaluating this long after the rollout completed; then the analysis passes."""
    pending_grace: float = 600.0
    """How long after the rollout started a signal may be *pending* (its data cannot exist yet: no
    container of the new revision started, no sample of its pods scraped) before the rules treat it
    as inconclusive. The default is Kubernetes' default `progressDeadlineSeconds`."""
    stable_min_age: float = 600.0
    """`baseline: stable` before any revision passed an analysis: the newest older revision that served
    at least this long (from its creation until the next revision started)."""


class Direction(StrEnum):
    """Which way of a comparison is worse for the new revision."""

    INCREASE = "increase"
    """Larger values are worse (latency, error rate)."""
    DECREASE = "decrease"
    """Smaller values are worse (throughput, cache hit ratio)."""


@dataclass(frozen=True)
class ComparisonSpec:
    """A statistical comparison (`spec.compare.<name>`) of a Prometheus signal's samples over the analysis
    window, new revision against a baseline, with a one-sided Mann-Whitney U test (`daemon.compare`)."""

    name: str
    """The name rules use: `<name>.worse`, `<name>.p`, `<name>.effect`, `<name>.samples`."""
    signal: str
    """The Prometheus signal whose query is sampled (by range queries, for both sides)."""
    baseline: BaselineMode
    """`concurrent` (the previous revision's pods over the same window) or `stable`."""
    source: Source
    """Where it was defined."""
    direction: Direction = Direction.INCREASE
    """Which way is worse."""
    confidence: float = 0.95
    """The test is significant when p < 1 - confidence."""
    min_samples: int = 20
    """Samples each side needs (NaN/no-traffic points do not count); fewer is inconclusive."""
    margin: float = 0.1
    """`worse` also needs the effect (relative difference of medians, worse-positive) above this."""
    step: float = 60.0
    """Seconds between two samples of the range queries."""


@dataclass(frozen=True)
class SignalSpec:
    """One named signal of a policy."""

    name: str
    """The name rules use in `when` (a CEL identifier)."""
    provider: Provider
    """How to measure it."""
    source: Source
    """Where it was defined."""

    @property
    def type(self) -> SignalType:
        """NUMBER for Prometheus, logs and alerts signals, BOOL for HTTP and WebSocket checks."""
        counted = PrometheusSignal | LogsSignal | AlertsSignal
        return SignalType.NUMBER if isinstance(self.provider, counted) else SignalType.BOOL

    @property
    def has_baseline(self) -> bool:
        """True when `baseline.<name>` is available to rules."""
        return isinstance(self.provider, PrometheusSignal) and self.provider.baseline is not None

    @property
    def baseline_mode(self) -> BaselineMode | None:
        """Which revision `baseline.<name>` is measured on; None without a baseline."""
        return self.provider.baseline if isinstance(self.provider, PrometheusSignal) else None


@dataclass(frozen=True)
class Rule:
    """A condition and what to do when it has held long enough."""

    name: str
    """Unique within the policy; used in notifications, Events and the state annotation."""
    when: CompiledExpression
    """The checked CEL condition (`when.text` is the source)."""
    action: Action
    """rollback, review or notify (never pass)."""
    source: Source
    """Where it was defined."""
    for_: float = 0.0
    """Seconds the condition must hold on every evaluation before the rule fires; 0 fires at once."""
    on_inconclusive: Unavailable = Unavailable.HOLD
    """What to do while a needed signal is INCONCLUSIVE."""
    on_error: Unavailable = Unavailable.HOLD
    """What to do while a needed signal is ERROR."""


@dataclass(frozen=True)
class RollbackJob:
    """A Job run with the failing revision's image before a rollback (e.g. a schema downgrade)."""

    command: tuple[str, ...]
    """The container command, not run through a shell."""
    timeout: float = 300.0
    """Seconds the Job may take."""
    proceed_on_failure: bool = False
    """Roll back even if the Job fails or times out (otherwise: stop and ask for review)."""


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the daemon's namespace."""

    secret: str
    """Secret name."""
    key: str
    """Key inside the Secret."""


@dataclass(frozen=True)
class SlackTarget:
    """Where Slack messages go: a channel (with the daemon's bot token) or a webhook from a Secret."""

    channel: str | None = None
    """Channel name (`#deploys`) or ID, posted to with the daemon's bot token."""
    webhook_from: SecretKeyRef | None = None
    """An incoming-webhook URL read from a Secret (`webhookFrom`), instead of a channel."""


@dataclass(frozen=True)
class PagerDutyTarget:
    """Where PagerDuty events go."""

    routing_key_from: SecretKeyRef
    """The Events API v2 routing key, read from a Secret (never written in a rule file)."""
    resolve_on_recovery: bool = False
    """Resolve the rollout's incident once rollguard's rollback has completed (the previous revision
    serves again). Off by default: a human usually wants to look at the bad deploy first."""


@dataclass(frozen=True)
class NotifyTargets:
    """Notification targets of a policy; None means the daemon's defaults."""

    slack: SlackTarget | None = None
    pagerduty: PagerDutyTarget | None = None
    routes: Mapping[str, frozenset[str]] | None = None
    """`routes`: alert kind (`rollback_started`, …) → channels (`slack`, `pagerduty`), replacing the
    default matrix for those kinds; None: the default matrix."""


NOTIFY_ROUTE_KINDS: tuple[str, ...] = (
    "rollout_started", "rollout_complete", "notify_matched", "review_needed", "rollout_failed",
    "rollback_started", "rollback_completed", "rollback_failed", "recovered", "superseded", "review_closed",
    "analysis_error",
)
"""Alert kinds `notify.routes` may name (the notify package checks at import that they are its AlertKinds)."""

NOTIFY_PAGEABLE_KINDS: frozenset[str] = frozenset(
    {"review_needed", "rollout_failed", "rollback_started", "rollback_completed", "rollback_failed", "recovered",
     "review_closed", "analysis_error"}
)
"""Kinds PagerDuty has an event for (notify checks at import they are its PAGERDUTY_ACTIONS)."""

NOTIFY_ROUTE_CHANNELS: tuple[str, ...] = ("slack", "pagerduty")
"""Channels `notify.routes` may name."""


class GitOpsMode(StrEnum):
    """`spec.gitops`: what a rollback means for a Deployment that Argo CD or Flux applies."""

    PAGE = "page"
    """Do not undo (the tool would put the bad template back): page with the Git revision to revert."""
    SUSPEND = "suspend"
    """Suspend the tool's sync for the owner, undo, page: revert in Git, then `rollguard resume`."""
    UNDO = "undo"
    """Undo as for any Deployment (for tools that do not self-heal); a re-applied template is not undone again."""


@dataclass(frozen=True)
class RollbackPolicy:
    """One `kind: RollbackPolicy` document."""

    name: str
    """`metadata.name`, unique across all loaded files."""
    selector: Selector
    """Which Deployments it applies to."""
    analysis: AnalysisTiming
    """When to measure."""
    signals: Mapping[str, SignalSpec]
    """Signals by name, in file order."""
    rules: tuple[Rule, ...]
    """Rules in file order."""
    source: Source
    """Where the document starts."""
    on_failure: Action = Action.NOTIFY
    """What to do when the rollout itself fails (ProgressDeadlineExceeded): notify (alert only), review
    or rollback. The failure is always announced on Slack and PagerDuty whatever this says."""
    on_rollback_job: RollbackJob | None = None
    """`onRollback.job`, if any."""
    notify: NotifyTargets = field(default_factory=NotifyTargets)
    """`notify`, the targets of this policy's notifications."""
    gitops: GitOpsMode = GitOpsMode.PAGE
    """`gitops`: a rollback of a GitOps-owned Deployment. The default `page` never fights the tool and
    needs no permission on its objects."""
    comparisons: Mapping[str, ComparisonSpec] = field(default_factory=dict)
    """`compare`: statistical comparisons by name, in file order."""


@dataclass(frozen=True)
class RuleError(Exception):
    """One problem in a rule file, printed as `file:line: field: message`."""

    file: str
    """The file as it was named to the loader."""
    line: int | None
    """1-based line, or None when the problem is the file as a whole."""
    field: str
    """Dotted path of the field (`spec.rules[2].for`), empty when not about one field."""
    message: str
    """What is wrong and, where possible, what to write instead."""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    """Everything loaded from a set of files. Policies from a file with any error are left out."""

    policies: tuple[RollbackPolicy, ...]
    """The valid policies, in file order (files sorted by name within a directory)."""
    errors: tuple[RuleError, ...]
    """Every problem found, in file and line order."""
    files: tuple[str, ...] = ()
    """Every file read, in order."""

    @property
    def ok(self) -> bool:
        """True when no file had an error."""
        return not self.errors
