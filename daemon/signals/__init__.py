"""Signals: what rollguard measures about a rollout, one provider per file behind the `SignalProvider` Protocol.

`base` holds the shared vocabulary (`Phase`, `Measurement`, `SignalContext`, `SignalProvider`); each
provider (Prometheus, pod logs, HTTP, WebSocket) lives in its own module and returns a `Measurement`.
Providers never raise for an outcome: "Prometheus is down" is a `Measurement` in phase ERROR.
"""
