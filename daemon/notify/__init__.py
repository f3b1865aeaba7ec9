"""Notifications: tell Slack and PagerDuty (and the console) what rollguard saw and did.

    actions ──Alert──▶ NotificationPipeline.submit()      (sync, never blocks, never raises)
                         dedup ─▶ fan-out ─▶ one lane per notifier: queue ─▶ retry ─▶ Notifier.send()
                                  (NotifyRouter: the alert's policy's targets and routes, else the
                                   daemon-wide notifiers and ROUTES)

Modules, one job each:
    model      AlertKind, Alert, Channel, ROUTES (the matrix), PAGERDUTY_ACTIONS, SendResult,
               classify_status (the one place HTTP statuses become ok/retry/give up), Notifier Protocol
               ThreadStore (where each rollout's Slack thread is) and its in-memory default
    pipeline   NotificationPipeline, RetryPolicy, PrometheusMetrics;  dedup  Deduplicator
    routing    NotifyRouter (per-policy targets, misrouting), PolicyTarget, SecretSource Protocol
    configfile the --notify-config file: load it, check it with file:line errors
    slack      SlackNotifier (bot token: one thread per rollout), SlackWebhookNotifier
    pagerduty  PagerDutyNotifier (Events API v2, one incident per rollout via dedup_key)
    console    ConsoleNotifier;  nop  NopNotifier (nothing configured)
    factory    build_notifiers(config) → NotifierSet; refuses unknown names and keys
    secrets    Redactor (scrubs secrets from every error and log line), read_secret

Notifiers do not raise for delivery problems; they return a SendResult. What this package raises:

    Exception
     └── NotifyError                  base of everything below
          └── NotifyConfigError       (also a ValueError) unknown notifier or key, bad value — at load time
               └── SecretSourceError  a secret's variable or file is missing/empty/unreadable
                                      (names the source, never the value)

plus ValueError from constructors given impossible numbers (Alert, RetryPolicy, NotificationPipeline)
and RuntimeError for lifecycle misuse (start() twice, restart after stop()).
"""

from __future__ import annotations

from daemon.notify.delivery import PrometheusMetrics, RetryPolicy
from daemon.notify.factory import NotifierSet, build_notifiers
from daemon.notify.model import (
    KIND_LABELS,
    PAGERDUTY_ACTIONS,
    ROUTES,
    Alert,
    AlertKind,
    Channel,
    Notifier,
    NotifyConfigError,
    NotifyError,
    PagerDutyAction,
    SecretSourceError,
    SendResult,
    classify_status,
    is_routed,
    rollout_key_for,
)
from daemon.notify.pipeline import NotificationPipeline
from daemon.notify.secrets import Redactor

__all__ = [
    "KIND_LABELS",
    "PAGERDUTY_ACTIONS",
    "ROUTES",
    "Alert",
    "AlertKind",
    "Channel",
    "NotificationPipeline",
    "Notifier",
    "NotifierSet",
    "NotifyConfigError",
    "NotifyError",
    "PagerDutyAction",
    "PrometheusMetrics",
    "Redactor",
    "RetryPolicy",
    "SecretSourceError",
    "SendResult",
    "build_notifiers",
    "classify_status",
    "is_routed",
    "rollout_key_for",
]
