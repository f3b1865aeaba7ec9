"""Measurement types shared by the rules (pure core) and the signal providers."""

from daemon.signals.base import Measurement, Phase, SignalContext

__all__ = ["Measurement", "Phase", "SignalContext"]
