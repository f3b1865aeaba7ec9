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

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.kube.rollout_state import POD_TEMPLATE_HASH
from daemon.rollout import REVISION_HISTORY
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
    numbers: dict[str, set[int]] = {}
    for sample in revisions.samples:
        number = sample.labels.get(REVISION_LABEL, "")
        if number.isdigit():
            numbers.setdefault(sample.labels.get("replicaset", ""), set()).add(int(number))
    records = []
    for sample in created.samples:
        name = sample.labels.get("replicaset", "")
        if not name.startswith(f"{deployment}-") or sample.value != sample.value:  # NaN: not a time
            continue
        records.append(record(namespace=namespace, deployment=deployment, uid=uid, name=name,
                              created=sample.value, revisions=sorted(numbers.get(name, ()))))
    return sorted(records, key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"]))


def _regex(name: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else f"\\\\{c}" for c in name)


def record(*, namespace: str, deployment: str, uid: str, name: str, created: float,
           revisions: Sequence[int]) -> dict[str, Any]:
    """A ReplicaSet record (metadata only) from its kube-state-metrics series; `revisions`: every revision it
    was exported as, oldest first (an undo renumbers a re-used ReplicaSet: the earlier ones are its history)."""
    annotations: dict[str, str] = {SOURCE: KSM}
    if revisions:
        annotations["deployment.kubernetes.io/revision"] = str(revisions[-1])
    if len(revisions) > 1:
        annotations[REVISION_HISTORY] = ",".join(str(r) for r in revisions[:-1])
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


SCAN = 300.0
"""Seconds between the moments the first lookup checks for a revision's series (Prometheus' lookback is 5m,
so no series is missed between two of them)."""


async def revision_first_seen(prometheus: PrometheusClient, *, namespace: str, replica_set: str, revision: int,
                              window: float, now: float) -> float | None:
    """When kube-state-metrics first exported `replica_set` as `revision` within `window` seconds before `now`
    (epoch seconds): the start of an undo's re-roll, which the re-used ReplicaSet's creation time does not
    tell. None when no such series exists (kube-state-metrics does not export the revision annotation).

    Two steps: the first 5-minute mark at which the series had a sample, then the exact first sample in the
    5 minutes before it. Raises `PrometheusError` when Prometheus cannot answer."""
    series = (f'kube_replicaset_annotations{{namespace="{quote(namespace)}",replicaset="{quote(replica_set)}",'
              f'{REVISION_LABEL}="{revision}"}}')
    coarse = await prometheus.query(
        f"min_over_time(timestamp({series})[{max(1, int(window))}s:{int(SCAN)}s])", at=now)
    marks = [s.value for s in coarse.samples if s.value == s.value]
    if not marks:
        return None
    mark = min(marks)
    fine = await prometheus.query_range(f"timestamp({series})", start=mark - SCAN, end=mark, step=1.0)
    seen = [v for s in fine for v in s.values if v == v]
    return min(seen) if seen else mark
