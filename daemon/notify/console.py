"""Console notifier: every alert as one readable line, for `rollguard demo`, local runs and dry runs.

With a stream it writes plain lines (`2024-01-01T00:00:00Z ROLLBACK_STARTED staging/backend rev 7: …`);
without one it logs through structlog (event `alert`, fields bound), so a cluster's JSON log gets the
alerts too. It takes every kind of alert (Channel.LOG), not just the ones Slack would get.
"""

from __future__ import annotations

import datetime
from typing import TextIO

import structlog

from daemon.notify.model import KIND_LABELS, Alert, Channel, SendResult
from daemon.notify.secrets import Redactor


def format_line(alert: Alert) -> str:
    """One line per alert; values and evidence appended when present."""
    when = datetime.datetime.fromtimestamp(alert.at, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = f"{when} {alert.kind.name} {alert.source} rev {alert.revision}: {KIND_LABELS[alert.kind]} — {alert.title}"
    parts = [f"{head}. {alert.summary}" if alert.summary else head]
    if alert.dry_run:
        parts.append("[dry-run]")
    if alert.rule:
        parts.append(f"rule={alert.rule}")
    if alert.action:
        parts.append(f"action={alert.action}")
    if alert.values:
        parts.append("values=" + ",".join(f"{k}={v}" for k, v in alert.values.items()))
    if alert.evidence:
        parts.append(f"evidence={len(alert.evidence)} line(s)")
    if alert.approve_command:
        parts.append(f"approve: {alert.approve_command}")
    return " ".join(parts)


class ConsoleNotifier:
    """Prints alerts to a stream, or logs them with structlog when no stream is given."""

    name = "console"
    channel = Channel.LOG

    def __init__(self, *, stream: TextIO | None = None, redactor: Redactor | None = None) -> None:
        self._stream = stream
        # Alert text comes from rule files and log lines; a pasted token must not reach the console.
        self._redactor = redactor or Redactor()
        self._log = structlog.get_logger("rollguard.notify.console")

    async def send(self, alert: Alert) -> SendResult:
        line = self._redactor.redact(format_line(alert))
        if self._stream is None:
            self._log.info(
                "alert", kind=alert.kind.value, rollout=alert.rollout_key, namespace=alert.namespace,
                deployment=alert.deployment, revision=alert.revision, message=line,
            )
            return SendResult.success()
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed stream
            return SendResult.give_up(self._redactor.describe(exc))
        return SendResult.success()

    async def aclose(self) -> None:
        """The stream belongs to the caller; nothing to release."""
