"""The `alerts` signal: how many firing Alertmanager alerts match the signal and belong to the rollout.

Each reading pulls Alertmanager's active alerts (`AlertmanagerClient`, shared by every analysis) and
adds the alerts pushed by its webhook since (`AlertHub`), so a lost webhook or a restarted daemon
misses nothing, and a pushed alert counts before the next pull would see it. The value is the count
(a number in CEL); the evidence is one `NAME: summary` line per counted alert.

When the pull fails the reading is ERROR ("could not tell"), unless pushed alerts already count:
then those are the value, and the message says the pull failed.
"""

from __future__ import annotations

from daemon.alertmanager import AlertHub, AlertmanagerClient, AlertmanagerUnavailable, counted
from daemon.clock import Clock
from daemon.rules.model import AlertsSignal
from daemon.signals.base import Measurement, Phase, SignalContext

MAX_EVIDENCE_LINES = 10
"""Counted alerts quoted in one reading, at most."""


class AlertsProvider:
    """Counts the rollout's firing alerts that satisfy one `alerts` signal."""

    def __init__(self, definition: AlertsSignal, *, hub: AlertHub, client: AlertmanagerClient, clock: Clock) -> None:
        self.definition = definition
        self._hub = hub
        self._client = client
        self._clock = clock

    async def measure(self, ctx: SignalContext) -> Measurement:
        pull_error: str | None = None
        try:
            asked_at, active = await self._client.active()
        except AlertmanagerUnavailable as exc:
            pull_error = str(exc)
            active = []
        else:
            self._hub.reconcile(active, asked_at=asked_at)
        merged = {a.fingerprint: a for a in active}
        merged.update((a.fingerprint, a) for a in self._hub.pushed())
        alerts = counted(merged.values(), ctx, self.definition, now=self._clock.now())
        if pull_error is not None and not alerts:
            return Measurement(Phase.ERROR, None, pull_error)
        names = sorted({a.name for a in alerts})
        if alerts:
            message = f"{len(alerts)} firing alert{'s' if len(alerts) != 1 else ''}: {', '.join(names)[:300]}"
        else:
            message = "no firing alert matches"
        if pull_error is not None:
            message += f" (pushed; the pull failed: {pull_error})"
        evidence = tuple(a.describe() for a in alerts[:MAX_EVIDENCE_LINES])
        return Measurement(Phase.OK, float(len(alerts)), message, evidence,
                           {"alerts": float(len(alerts)), "active": float(len(merged))})
