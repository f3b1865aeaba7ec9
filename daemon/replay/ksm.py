"""ReplicaSets the cluster no longer has, as kube-state-metrics recorded them in Prometheus.

The Deployment controller prunes old ReplicaSets (`revisionHistoryLimit`), but Prometheus keeps what
kube-state-metrics exported while they existed:

* `kube_replicaset_owner{namespace, replicaset, owner_kind="Deployment", owner_name}`: which are the
  Deployment's;
* `kube_replicaset_created{namespace, replicaset}`: the creation time (epoch seconds), the first
  revision of that template's start;
* `kube_replicaset_annotations{annotation_deployment_kubernetes_io_revision=...}`: the revision number,
  only when kube-state-metrics runs with
  `--metric-annotations-allowlist=replicasets=[deployment.kubernetes.io/revision]`; without it the
  revision is unknown (0).

Each is read with `last_over_time(...[window])` at the moment of the replay: a series that stopped
(the ReplicaSet was deleted) within the window still answers. The result is ReplicaSet records of the
same shape as the API server's (metadata only, no pod template), so the rest of replay treats them
like the ReplicaSets that still exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH
from daemon.signals.promapi import PrometheusClient

KSM = "kube-state-metrics"
SOURCE = "rollguard.io/replay-source"
"""The annotation that marks a ReplicaSet record made from kube-state-metrics series (value `KSM`)."""
REVISION_LABEL = "annotation_deployment_kubernetes_io_revision"


def quote(value: str) -> str:
    """`value` inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


async def pruned_replica_sets(prometheus: PrometheusClient, *, namespace: str, deployment: str,
                              uid: str, window: float, now: float) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets kube-state-metrics saw within `window` seconds before `now`, as records.

    Raises `PrometheusError` when Prometheus cannot answer; no series is an empty list."""
    span = f"[{max(1, int(window))}s]"
    ns = quote(namespace)
    owned = await prometheus.query(
        f'max by (replicaset) (last_over_time(kube_replicaset_owner{{namespace="{ns}",owner_kind="Deployment",'
        f'owner_name="{quote(deployment)}"}}{span}))', at=now)
    names = sorted({s.labels.get("replicaset", "") for s in owned.samples} - {""})
    if not names:
        return []
    which = "|".join(_regex(n) for n in names)
    created = await prometheus.query(
        f'max by (replicaset) (last_over_time(kube_replicaset_created{{namespace="{ns}",'
        f'replicaset=~"{which}"}}{span}))', at=now)
    revisions = await prometheus.query(
        f'max by (replicaset, {REVISION_LABEL}) (last_over_time(kube_replicaset_annotations{{namespace="{ns}",'
        f'replicaset=~"{which}",{REVISION_LABEL}!=""}}{span}))', at=now)
    revision_of: dict[str, str] = {}
    for sample in revisions.samples:
        number = sample.labels.get(REVISION_LABEL, "")
        name = sample.labels.get("replicaset", "")
        # An undo renumbers a ReplicaSet: the series of its latest revision carries the highest number.
        if number.isdigit() and int(number) > int(revision_of.get(name, "0")):
            revision_of[name] = number
    records = []
    for sample in created.samples:
        name = sample.labels.get("replicaset", "")
        if not name.startswith(f"{deployment}-") or sample.value != sample.value:  # NaN: not a time
            continue
        records.append(record(namespace=namespace, deployment=deployment, uid=uid, name=name,
                              created=sample.value, revision=revision_of.get(name)))
    return sorted(records, key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"]))


def _regex(name: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else f"\\\\{c}" for c in name)


def record(*, namespace: str, deployment: str, uid: str, name: str, created: float,
           revision: str | None) -> dict[str, Any]:
    """A ReplicaSet record (metadata only) from its kube-state-metrics series."""
    annotations: dict[str, str] = {SOURCE: KSM}
    if revision is not None:
        annotations["deployment.kubernetes.io/revision"] = revision
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {
        "name": name, "namespace": namespace, "creationTimestamp": stamp,
        "labels": {POD_TEMPLATE_HASH: name.removeprefix(f"{deployment}-")},
        "annotations": annotations,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": uid,
                             "controller": True}]}}


def from_ksm(rs: Mapping[str, Any]) -> bool:
    """Whether `rs` is a record made from kube-state-metrics (the ReplicaSet itself is gone)."""
    return ((rs.get("metadata") or {}).get("annotations") or {}).get(SOURCE) == KSM
