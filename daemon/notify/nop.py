"""The do-nothing notifier, used when no notifier is configured (as Flagger's NopNotifier).

It exists so the rest of the daemon never checks "is anything configured?": the pipeline always
has at least one notifier, and with this one every alert is accepted and dropped on purpose.
"""

from __future__ import annotations

from daemon.notify.model import Alert, Channel, SendResult


class NopNotifier:
    """Accepts every alert and sends it nowhere; counts them (handy in tests and `rollguard check`)."""

    name = "nop"
    channel = Channel.LOG

    def __init__(self) -> None:
        self.count = 0
        """Alerts accepted so far."""

    async def send(self, alert: Alert) -> SendResult:
        self.count += 1
        return SendResult.success()

    async def aclose(self) -> None:
        """Nothing to release."""
