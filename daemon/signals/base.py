"""The interface every signal provider implements; the measurement types live in `daemon.measurement`.

`Phase`, `Measurement` and `SignalContext` are re-exported here so code that imports them from
`daemon.signals.base` keeps working.
"""

from __future__ import annotations

from typing import Protocol

from daemon.measurement import Measurement, Phase, SignalContext

__all__ = ["Measurement", "Phase", "SignalContext", "SignalProvider"]


class SignalProvider(Protocol):
    """Measures one configured signal for one revision. Implementations never raise for an outcome:
    failures of their own dependencies are a `Measurement` in phase ERROR."""

    async def measure(self, ctx: SignalContext) -> Measurement:
        """Take one reading for the revision described by `ctx`."""
        ...
