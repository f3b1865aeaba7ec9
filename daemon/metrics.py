"""The daemon's own Prometheus metrics, in a registry per daemon instance (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Counters, gauges and histograms served on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.watch_relists = Counter("rollguard_watch_relists", "Re-lists forced by 410 Expired, by resource.",
                                     ["resource"], registry=r)
        self.is_leader = Gauge("rollguard_is_leader", "1 while this replica holds the leader lease.", registry=r)
        self.rules_reload_errors = Counter("rollguard_rules_reload_errors",
                                           "Rule reloads rejected because a file was invalid.", registry=r)
