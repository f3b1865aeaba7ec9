"""How the notification pipeline retries and what it counts: `RetryPolicy` and the metrics sink.

Kept apart from `daemon.notify.pipeline` so the pipeline module holds only the delivery machinery.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge


class MetricsSink(Protocol):
    """Where the pipeline reports what happened; `PrometheusMetrics` is the real one."""

    def sent(self, notifier: str) -> None: ...
    def retried(self, notifier: str) -> None: ...
    def failed(self, notifier: str, reason: str) -> None:
        """`reason`: rejected (the receiver said no), attempts, deadline, error."""
        ...
    def dropped(self, notifier: str, reason: str) -> None:
        """`reason`: overflow (queue full, oldest dropped), stopped (submitted after stop), shutdown."""
        ...
    def deduplicated(self, kind: str) -> None: ...
    def queued(self, notifier: str, depth: int) -> None: ...


class PrometheusMetrics:
    """Prometheus counters for the pipeline, registered in `registry` (a private one when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._sent = Counter("rollguard_notifications_sent", "Alerts delivered, by notifier.",
                             ["notifier"], registry=self.registry)
        self._retried = Counter("rollguard_notifications_retried", "Delivery attempts that will be retried.",
                                ["notifier"], registry=self.registry)
        self._failed = Counter("rollguard_notifications_failed", "Alerts given up on, by notifier and reason.",
                               ["notifier", "reason"], registry=self.registry)
        self._dropped = Counter("rollguard_notifications_dropped", "Alerts dropped before delivery was tried.",
                                ["notifier", "reason"], registry=self.registry)
        self._deduplicated = Counter("rollguard_notifications_deduplicated",
                                     "Alerts suppressed as repeats within the dedup window.", ["kind"],
                                     registry=self.registry)
        self._queue = Gauge("rollguard_notifications_queued", "Alerts waiting in a notifier's queue.",
                            ["notifier"], registry=self.registry)

    def sent(self, notifier: str) -> None:
        self._sent.labels(notifier).inc()

    def retried(self, notifier: str) -> None:
        self._retried.labels(notifier).inc()

    def failed(self, notifier: str, reason: str) -> None:
        self._failed.labels(notifier, reason).inc()

    def dropped(self, notifier: str, reason: str) -> None:
        self._dropped.labels(notifier, reason).inc()

    def deduplicated(self, kind: str) -> None:
        self._deduplicated.labels(kind).inc()

    def queued(self, notifier: str, depth: int) -> None:
        self._queue.labels(notifier).set(depth)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again. All durations in seconds."""

    max_attempts: int = 12
    """Attempts per alert per notifier, the first included."""
    deadline_seconds: float = 300.0
    """No attempt starts later than this after `submit()`; an alert about a rollout goes stale."""
    backoff_base: float = 1.0
    """Backoff ceiling after the first failure; it doubles per failure."""
    backoff_cap: float = 60.0
    """Largest backoff ceiling."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts}")
        if self.deadline_seconds <= 0:
            raise ValueError(f"deadline_seconds must be > 0, not {self.deadline_seconds}")
        if self.backoff_base <= 0:
            raise ValueError(f"backoff_base must be > 0, not {self.backoff_base}")
        if self.backoff_cap < self.backoff_base:
            raise ValueError(f"backoff_cap ({self.backoff_cap}) must be >= backoff_base ({self.backoff_base})")

    def delay(self, failures: int, *, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after the `failures`-th failed attempt.

        "Equal jitter": half the exponential ceiling plus a random part of the other half, so
        retries spread out but never collapse to zero. A receiver's Retry-After is a floor.
        """
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (failures - 1))
        jittered = ceiling / 2 + rng.uniform(0, ceiling / 2)
        return jittered if retry_after is None else max(retry_after, jittered)


