"""Per-policy routing: which notifiers an alert goes to, given the policy its rollout falls under.

    alert ─▶ NotifyRouter.notifiers_for(alert)
               targets_for(alert.policy)  (read at every alert: hot-reloaded policies route at once)
               ├─ channel the policy names (slack / pagerduty)  ─▶ its PolicyTarget
               ├─ channel it does not name                      ─▶ the daemon-wide notifier (the default)
               └─ LOG notifiers (console, nop)                  ─▶ always
             each filtered by the policy's `routes` (else the default matrix, `ROUTES`)

A `PolicyTarget` is a notifier whose credentials come from a Kubernetes Secret (a PagerDuty routing
key, a Slack webhook URL) or from the daemon's own Slack token (a channel). It resolves them at send
time through a `SecretSource`, and delivers through a concrete notifier cached per (kind, channel or
secret value) — so one Slack channel keeps one thread per rollout and one HTTP session, whichever
policies name it. When the Secret is missing or unusable, the alert is *misrouted*: sent to the
daemon-wide notifier of the same channel with "misrouted: <why>" in its title, logged at warning,
counted in `rollguard_notify_misrouted_total{policy,reason}` and handed to `on_misrouted(alert, why)`
(which records the Kubernetes Event). A Secret that cannot be read for another reason (API server
unreachable, forbidden) is a transient failure: retried, never sent to another team.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter

from daemon.notify.factory import ROUTING_KEY_LENGTH, Connections
from daemon.notify.model import Alert, Channel, Notifier, SendResult, is_routed
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.secrets import Redactor
from daemon.notify.slack import InMemoryThreadStore, SlackNotifier, SlackWebhookNotifier, ThreadStore

if TYPE_CHECKING:
    from daemon.rules.model import NotifyTargets, SecretKeyRef

log = structlog.get_logger("rollguard.notify.routing")


class SecretSource(Protocol):
    """Reads one key of a Secret in the daemon's namespace (the Kubernetes API in a cluster).

    `read` raises LookupError when the Secret or the key does not exist and ValueError when the value
    is unusable (not text, empty); any other exception means "could not read it now" (transient).
    Messages name the Secret and key, never the value.
    """

    async def read(self, secret: str, key: str) -> str:
        """The value of `key` in Secret `secret`, as text."""
        ...


TargetsFor = Callable[[str], "NotifyTargets | None"]
"""A policy's notification targets by policy name; None for an unknown policy."""

Misrouted = Callable[[Alert, str], None]
"""Called with the alert (as it was) and why, each time an alert goes to the default route instead."""


class TargetUnusable(Exception):
    """The target cannot be used as configured: the alert is misrouted. `reason` is the metric label
    (secret-missing, secret-malformed, no-slack-token, no-secret-source), `why` the sentence for humans."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


class NotifyRouter:
    """Maps alerts to notifiers: policy targets where the policy names them, the defaults elsewhere."""

    def __init__(
        self,
        *,
        defaults: Sequence[Notifier],
        targets_for: TargetsFor,
        secrets: SecretSource | None,
        connections: Connections,
        redactor: Redactor,
        registry: CollectorRegistry | None = None,
        thread_store: ThreadStore | None = None,
        on_misrouted: Misrouted | None = None,
    ) -> None:
        """`defaults`: the daemon-wide notifiers; `secrets`: where policies' Secrets are read (None: every
        secret-backed target is misrouted); `connections`: base URLs, timeouts and the Slack token the
        defaults use; `registry`: where the misrouted counter lives; `thread_store`: shared by every
        Slack channel notifier; `on_misrouted`: see the module docstring (it must not raise or block)."""
        self.defaults = tuple(defaults)
        self.on_misrouted = on_misrouted
        self._targets_for = targets_for
        self._secrets = secrets
        self._connections = connections
        self.redactor = redactor
        self._thread_store = thread_store if thread_store is not None else InMemoryThreadStore()
        self._targets: dict[str, PolicyTarget] = {}
        self._delivering: dict[tuple[str, str], Notifier] = {}
        self.misrouted = Counter("rollguard_notify_misrouted",
                                 "Alerts sent to the default route because the policy's target was unusable.",
                                 ["policy", "reason"], registry=registry if registry is not None else
                                 CollectorRegistry())

    def notifiers_for(self, alert: Alert) -> list[Notifier]:
        """Every notifier `alert` goes to (defaults in their order, then the policy's targets)."""
        targets = self._targets_for(alert.policy) if alert.policy is not None else None
        routes = targets.routes if targets is not None else None
        own: dict[Channel, PolicyTarget] = {}
        if targets is not None and targets.slack is not None:
            own[Channel.SLACK] = self._target_for_slack(targets.slack.channel, targets.slack.webhook_from)
        if targets is not None and targets.pagerduty is not None:
            own[Channel.PAGERDUTY] = self._target("pagerduty", targets.pagerduty.routing_key_from, None)
        chosen: list[Notifier] = [n for n in self.defaults
                                  if n.channel not in own and is_routed(alert.kind, n.channel, routes)]
        chosen.extend(t for channel, t in own.items() if is_routed(alert.kind, channel, routes))
        return chosen

    def targets_of(self, targets: NotifyTargets) -> list[PolicyTarget]:
        """The policy targets `targets` names (Slack first), whatever the routes say."""
        own = []
        if targets.slack is not None:
            own.append(self._target_for_slack(targets.slack.channel, targets.slack.webhook_from))
        if targets.pagerduty is not None:
            own.append(self._target("pagerduty", targets.pagerduty.routing_key_from, None))
        return own

    def default_for(self, channel: Channel) -> Notifier | None:
        """The daemon-wide notifier delivering to `channel`, if one is configured."""
        return next((n for n in self.defaults if n.channel is channel), None)

    def _target_for_slack(self, channel: str | None, webhook: SecretKeyRef | None) -> PolicyTarget:
        return self._target("slack", webhook, channel)

    def _target(self, kind: str, ref: SecretKeyRef | None, channel: str | None) -> PolicyTarget:
        # The name labels metrics and logs: it says where the value comes from, never the value.
        name = f"{kind}:{channel}" if ref is None else f"{kind}:secret/{ref.secret}/{ref.key}"
        target = self._targets.get(name)
        if target is None:
            target = self._targets[name] = PolicyTarget(name=name, kind=kind, ref=ref, channel=channel, router=self)
        return target

    async def resolve(self, target: PolicyTarget) -> Notifier:
        """The concrete notifier behind `target`, reading its Secret; raises `TargetUnusable` to misroute."""
        conn = self._connections
        if target.kind == "slack" and target.ref is None:
            if conn.slack_token is None:
                raise TargetUnusable("no-slack-token", f"Slack channel {target.slack_channel} needs the daemon's "
                                                       "bot token, and the daemon has none (webhook mode or no Slack)")
            assert target.slack_channel is not None
            return self._cached(("slack", target.slack_channel), lambda: SlackNotifier(
                token=conn.slack_token or "", channel=target.slack_channel or "", redactor=self.redactor,
                base_url=conn.slack_base_url, timeout=conn.slack_timeout, thread_store=self._thread_store,
                name=target.name))
        assert target.ref is not None
        value = await self._read(target.ref)
        if target.kind == "slack":
            parts = urllib.parse.urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise TargetUnusable("secret-malformed", f"Secret {target.ref.secret}/{target.ref.key} "
                                     "is not an http(s) webhook URL")
            return self._cached(("slack-webhook", value), lambda: SlackWebhookNotifier(
                url=value, redactor=self.redactor, timeout=conn.slack_timeout, name=target.name))
        if len(value) != ROUTING_KEY_LENGTH:
            raise TargetUnusable("secret-malformed", f"Secret {target.ref.secret}/{target.ref.key} has "
                                                f"{len(value)} characters, a PagerDuty routing key has "
                                                f"{ROUTING_KEY_LENGTH}")
        return self._cached(("pagerduty", value), lambda: PagerDutyNotifier(
            routing_key=value, redactor=self.redactor, base_url=conn.pagerduty_base_url,
            timeout=conn.pagerduty_timeout, ssl_context=conn.pagerduty_ssl, name=target.name))

    async def _read(self, ref: SecretKeyRef) -> str:
        if self._secrets is None:
            raise TargetUnusable("no-secret-source", f"Secret {ref.secret}/{ref.key} cannot be read "
                                                "(no Kubernetes API to read it from)")
        try:
            value = (await self._secrets.read(ref.secret, ref.key)).strip()
        except LookupError as exc:
            raise TargetUnusable("secret-missing", self.redactor.redact(str(exc))) from None
        except ValueError as exc:
            raise TargetUnusable("secret-malformed", self.redactor.redact(str(exc))) from None
        if not value:
            raise TargetUnusable("secret-malformed", f"Secret {ref.secret}/{ref.key} is empty")
        self.redactor.add(value)
        return value

    def _cached(self, key: tuple[str, str], build: Callable[[], Notifier]) -> Notifier:
        notifier = self._delivering.get(key)
        if notifier is None:
            notifier = self._delivering[key] = build()
        return notifier

    async def misroute(self, alert: Alert, target: PolicyTarget, problem: TargetUnusable) -> SendResult:
        """Send `alert` to the default notifier of `target`'s channel, marked; report the misrouting."""
        policy = alert.policy or ""
        self.misrouted.labels(policy, problem.reason).inc()
        log.warning("notification misrouted to the default target", policy=policy, target=target.name,
                    reason=problem.reason, why=problem.why, kind=alert.kind.value, rollout=alert.rollout_key)
        if self.on_misrouted is not None:
            try:
                self.on_misrouted(alert, problem.why)
            except Exception as exc:  # reporting must never stop the alert itself
                log.error("on_misrouted callback failed", error=self.redactor.describe(exc))
        default = self.default_for(target.channel)
        if default is None:
            return SendResult.give_up(f"misrouted: {problem.why}; and no default {target.channel.value} "
                                      "target is configured")
        marked = dataclasses.replace(alert, title=f"{alert.title} (misrouted: {problem.why})")
        return await default.send(marked)

    async def aclose(self) -> None:
        """Close every concrete notifier created for policy targets (the defaults belong to the pipeline)."""
        for notifier in self._delivering.values():
            try:
                await notifier.aclose()
            except Exception as exc:  # best effort, as the pipeline closes its own
                log.warning("could not close notifier", notifier=notifier.name, error=self.redactor.describe(exc))
        self._delivering.clear()


class PolicyTarget:
    """A policy's own Slack or PagerDuty target, resolved at send time (see the module docstring)."""

    def __init__(self, *, name: str, kind: str, ref: SecretKeyRef | None, channel: str | None,
                 router: NotifyRouter) -> None:
        self.name = name
        self.kind = kind
        self.ref = ref
        self.slack_channel = channel
        """The Slack channel, for a channel target (posted to with the daemon's bot token)."""
        self.channel = Channel.SLACK if kind == "slack" else Channel.PAGERDUTY
        self._router = router

    async def send(self, alert: Alert) -> SendResult:
        try:
            notifier = await self._router.resolve(self)
        except TargetUnusable as problem:
            return await self._router.misroute(alert, self, problem)
        except Exception as exc:  # the API server is away or says no: try again later, never elsewhere
            return SendResult.retry_later(f"{self.name}: cannot read its Secret now: "
                                          f"{self._router.redactor.describe(exc)}")
        return await notifier.send(alert)

    async def aclose(self) -> None:
        """Nothing: the router closes the notifiers it built (shared between targets)."""
