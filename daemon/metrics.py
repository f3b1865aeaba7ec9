"""The daemon's own Prometheus metrics, in a registry per daemon instance (tests run several).

Per-Deployment series (`rollguard_analysis_state`, `rollguard_signal_value`,
`rollguard_rule_pending_seconds`) exist only while the Deployment's analysis runs: they are removed
when it ends, so their number is bounded by the live analyses, never by the history.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector


@dataclass(frozen=True)
class _Children:
    """The labelled series of one live analysis: its state, and its gauges by signal and by rule name."""

    state: Gauge
    signals: dict[str, Gauge]
    rules: dict[str, Gauge]


ANALYSIS_STATES = {"analysing": 1, "review": 2, "rolling-back": 3, "failed": 4}
"""Value of `rollguard_analysis_state` for each lifecycle stage an analysis can be live in."""


class Metrics:
    """Counters, gauges and histograms served on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # python_gc_*: collections and what they found, by generation (`daemon.gcpolicy`).
        GCCollector(registry=r)
        self.rollouts_seen = Counter("rollguard_rollouts_seen", "Rollouts noticed, by how they ended so far.",
                                     ["event"], registry=r)
        self.analyses_active = Gauge("rollguard_analyses_active", "Analyses currently running.", registry=r)
        self.evaluations = Counter("rollguard_evaluations", "Rule evaluations run.", registry=r)
        self.verdicts = Counter("rollguard_verdicts", "Verdicts reached, by action.", ["action"], registry=r)
        self.rollbacks = Counter("rollguard_rollbacks", "Rollbacks attempted, by result.", ["result"], registry=r)
        self.provider_errors = Counter("rollguard_provider_errors",
                                       "Signal measurements that ended in phase error, by provider.",
                                       ["provider"], registry=r)
        self.evaluation_seconds = Histogram("rollguard_evaluation_seconds",
                                            "Time to gather signals and evaluate one analysis tick.",
                                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                            registry=r)
        self.evaluation_lag = Histogram(
            "rollguard_evaluation_lag_seconds",
            "From an analysis tick's planned time to its verdict: how far behind schedule rollguard judges.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.ticks_skipped = Counter("rollguard_ticks_skipped",
                                     "Planned analysis ticks never evaluated because the one before ran late.",
                                     registry=r)
        self.watch_relists = Counter("rollguard_watch_relists", "Re-lists forced by 410 Expired, by resource.",
                                     ["resource"], registry=r)
        self.is_leader = Gauge("rollguard_is_leader", "1 while this replica holds the leader lease.", registry=r)
        self.rules_reload_errors = Counter("rollguard_rules_reload_errors",
                                           "Rule reloads rejected because a file was invalid.", registry=r)
        self.analysis_state = Gauge(
            "rollguard_analysis_state",
            "Stage of the Deployment's live analysis: 1 analysing, 2 review, 3 rolling-back, 4 failed.",
            ["namespace", "deployment"], registry=r)
        self.signal_value = Gauge(
            "rollguard_signal_value",
            "Last reading of each signal of a live analysis (checks: 1 passed, 0 failed; NaN: no reading).",
            ["namespace", "deployment", "signal"], registry=r)
        self.rule_pending_seconds = Gauge(
            "rollguard_rule_pending_seconds",
            "Seconds each rule's condition of a live analysis has been true (0: not pending).",
            ["namespace", "deployment", "rule"], registry=r)
        # The labelled children of each live analysis' series, by signal and by rule: `.labels()` looks
        # the child up under a lock, and this runs after every evaluation of every analysis.
        self._per_deployment: dict[tuple[str, str], _Children] = {}

    def evaluated(self, action: str, seconds: float, late: float | None, error_providers: list[str]) -> None:
        """One evaluation: its verdict's action, how long it took, how late it was (seconds from its
        planned tick to the verdict; None for one woken by pushed evidence), the providers in error."""
        self.evaluations.inc()
        self.verdicts.labels(action=action).inc()
        self.evaluation_seconds.observe(seconds)
        if late is not None:
            self.evaluation_lag.observe(max(0.0, late))
        for provider in error_providers:
            self.provider_errors.labels(provider=provider).inc()

    def observe_analysis(self, namespace: str, deployment: str, *, detail: Mapping[str, Any]) -> None:
        """Set the per-Deployment series from an item of `/api/v2/analyses` (`daemon.view.schema`)."""
        children = self._per_deployment.get((namespace, deployment))
        if children is None:
            children = self._per_deployment[(namespace, deployment)] = _Children(
                self.analysis_state.labels(namespace, deployment), {}, {})
        children.state.set(ANALYSIS_STATES.get(str(detail.get("state")), 0))
        for signal in detail.get("signals") or []:
            value = signal.get("value")
            number = float(value) if isinstance(value, int | float) else math.nan
            name = signal["name"]
            child = children.signals.get(name)
            if child is None:
                child = children.signals[name] = self.signal_value.labels(namespace, deployment, name)
            child.set(number)
        for rule in detail.get("rules") or []:
            name = rule["name"]
            child = children.rules.get(name)
            if child is None:
                child = children.rules[name] = self.rule_pending_seconds.labels(namespace, deployment, name)
            child.set(rule.get("pendingSeconds") or 0)

    def forget_analysis(self, namespace: str, deployment: str) -> None:
        """Remove the per-Deployment series of an analysis that ended."""
        children = self._per_deployment.pop((namespace, deployment), None)
        for signal in children.signals if children is not None else ():
            self.signal_value.remove(namespace, deployment, signal)
        for rule in children.rules if children is not None else ():
            self.rule_pending_seconds.remove(namespace, deployment, rule)
        with contextlib.suppress(KeyError):  # never set when the analysis was cancelled before it began
            self.analysis_state.remove(namespace, deployment)
