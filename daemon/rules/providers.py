"""The signal providers' part of a rule file (`signals.<name>.<provider>`), typed and frozen; read it
through `daemon.rules.model`, which re-exports every name."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matchers reach this module through regexes and limits: an annotation only
    from daemon.rules.matchers import Matcher


class BaselineMode(StrEnum):
    """Which revision a baseline is measured on."""

    PREVIOUS = "previous"
    """The previous revision's pods, at the moment the rollout started."""
    STABLE = "stable"
    """The last revision whose analysis passed (or, before any did, the last that served for
    `stableMinAge`), at the moment it stopped being the newest (`daemon.baselines`)."""
    CONCURRENT = "concurrent"
    """The previous revision's pods at the same instant as the new ones, every evaluation, while any of
    them is ready (a rolling update in progress); then the stable baseline."""


@dataclass(frozen=True)
class PrometheusSignal:
    """A PromQL query whose (single, scalar or one-series) result is the value."""

    query: str
    """The query template; placeholders are escaped by `templates.render_promql`."""
    baseline: BaselineMode | None = None
    """If set, the same query is run for the previous revision to give `baseline.<name>`."""


@dataclass(frozen=True)
class LogsSignal:
    """The number of lines matching a regex in the new pods' logs since the rollout started."""

    pattern: str
    """Python regex, searched in each line."""
    container: str | None = None
    """Container to read; None means every container of the pod."""


@dataclass(frozen=True)
class JsonExpectation:
    """A value the JSON response body must hold."""

    path: str
    """`$`-rooted path of keys and indexes, e.g. `$.status` or `$.items[0].id`."""
    equals: object
    """The JSON value expected there (string, number, bool, null, list or object)."""


@dataclass(frozen=True)
class HttpSignal:
    """An HTTP check: true when the response matches every expectation."""

    url: str
    """URL template; placeholders are encoded by `templates.render_url`."""
    method: str = "GET"
    """HTTP method."""
    expect_status: int = 200
    """Status code the check requires."""
    timeout: float = 2.0
    """Seconds before the check counts as failed."""
    expect_body: str | None = None
    """Python regex the body must contain, if set."""
    expect_json: JsonExpectation | None = None
    """A JSON value the body must hold, if set."""


@dataclass(frozen=True)
class WebSocketSignal:
    """A WebSocket check: connect, optionally send one message, and expect a reply."""

    url: str
    """`ws://` or `wss://` URL template."""
    send: str | None = None
    """Text message sent after connecting, if set."""
    expect: str | None = None
    """Python regex a received text message must contain; None means connecting is enough."""
    timeout: float = 2.0
    """Seconds for the whole exchange before the check counts as failed."""


class AlertScope(StrEnum):
    """Which firing alerts belong to a rollout (`alerts.scope`)."""

    POD = "pod"
    """Alerts of the new revision's pods: the namespace label, and the pod label starting with `podPrefix`."""
    DEPLOYMENT = "deployment"
    """Alerts of the Deployment: the namespace label, and the deployment label equal to its name."""
    NAMESPACE = "namespace"
    """Alerts of the Deployment's namespace (the namespace label only)."""


@dataclass(frozen=True)
class AlertLabels:
    """The alert label names that tie an alert to a rollout (`alerts.labels`)."""

    namespace: str = "namespace"
    pod: str = "pod"
    deployment: str = "deployment"


@dataclass(frozen=True)
class AlertsSignal:
    """The number of firing Alertmanager alerts that match and belong to the rollout, started during it."""

    matchers: tuple[Matcher, ...]
    """Alertmanager matchers every counted alert satisfies (all of them)."""
    scope: AlertScope = AlertScope.POD
    """Which alerts belong to the rollout."""
    labels: AlertLabels = field(default_factory=AlertLabels)
    """Label names read for the scope."""


Provider = PrometheusSignal | LogsSignal | HttpSignal | WebSocketSignal | AlertsSignal
