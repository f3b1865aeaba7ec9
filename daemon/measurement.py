"""The measurement vocabulary shared by every signal provider and by `rules.evaluate`.

This module is the neutral ground between the pure rules core and the providers that do I/O: it
imports nothing else of `daemon`, so `daemon.rules` can use these types without depending on
`daemon.signals`.

A provider turns a `SignalContext` (the template variables of one rollout revision) into one
`Measurement`. Four phases follow Argo Rollouts' analysis phases, and the line between them is
the line between "the rollout is bad" and "we could not tell"; a fifth, PENDING, is "too early to tell":

* OK: measured, and for a check signal (HTTP, WebSocket) the check passed.
* FAILED: measured, and the check failed. A check against the workload that times out, is refused
  or answers the wrong status is FAILED: that *is* the measurement ("the key feature is down").
* INCONCLUSIVE: the measuring side worked but had nothing to judge: no samples yet, an empty
  Prometheus result, no previous revision to take a baseline from.
* ERROR: the measuring side itself is broken: Prometheus unreachable, the Kubernetes API refusing
  pod logs. An ERROR must never be read as "the rollout is bad".
* PENDING: the data cannot exist yet, because the new revision has not got that far: no container of
  its ReplicaSet has started (logs), no sample of its pods has been scraped (Prometheus). Not an
  outage: the rules wait for it (up to the policy's `pendingGrace`) instead of applying
  `onInconclusive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """Outcome class of one measurement (see the module docstring for where the lines are drawn)."""

    OK = "ok"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    PENDING = "pending"


NO_BASELINE = "noBaseline"
"""`details` key (value 1.0) of an INCONCLUSIVE baseline that cannot exist, as opposed to one that could not
be measured: there is no revision to take it from (the Deployment's first revision). A rule that needs
it is not applied, instead of being held as for missing data (`rules.evaluate`)."""


@dataclass(frozen=True)
class Measurement:
    """One reading of one signal.

    Frozen but not hashable (`details` is a mapping); compare with `==`.
    """

    phase: Phase
    """Outcome class; see `Phase`."""
    value: float | bool | None
    """A number for query/count signals (Prometheus, logs), a bool for check signals (HTTP, WebSocket:
    True when the check passed); None when there is nothing to report (INCONCLUSIVE, ERROR, PENDING)."""
    message: str
    """One line for humans: what was measured or what went wrong."""
    evidence: tuple[str, ...] = ()
    """Short excerpts worth quoting in a notification: matching log lines, a response body."""
    details: Mapping[str, float] = field(default_factory=dict)
    """Extra numbers (sample count, latency in seconds, HTTP status) for logs and notifications."""


@dataclass(frozen=True)
class SignalContext:
    """The template variables of one Deployment revision, as providers and templates see them."""

    namespace: str
    """Namespace of the Deployment."""
    deployment: str
    """Name of the Deployment."""
    revision: int
    """The `deployment.kubernetes.io/revision` of the ReplicaSet being measured."""
    pod_template_hash: str
    """The `pod-template-hash` label of that ReplicaSet; its pods carry the same label."""
    pod_prefix: str
    """Name prefix of that ReplicaSet's pods: `<deployment>-<pod-template-hash>-`."""
    labels: Mapping[str, str]
    """Labels of the pod template (without `pod-template-hash`), reachable as `{{labels.KEY}}`."""
    rollout_started_at: float
    """When the rollout of this revision started, in seconds since the epoch (UTC)."""

    def template_variables(self) -> dict[str, str]:
        """The values of `{{namespace}}`, `{{deployment}}`, `{{revision}}`, `{{podTemplateHash}}`,
        `{{podPrefix}}` and `{{labels.KEY}}`, keyed by the name between the braces."""
        variables = {
            "namespace": self.namespace,
            "deployment": self.deployment,
            "revision": str(self.revision),
            "podTemplateHash": self.pod_template_hash,
            "podPrefix": self.pod_prefix,
        }
        variables.update({f"labels.{key}": value for key, value in self.labels.items()})
        return variables
