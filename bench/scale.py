"""Scale: the daemon (a separate process) watching thousands of Deployments — RSS, idle CPU, time to ready.

The simulated cluster runs in the bench process; the Deployments are created straight into its store
(`replicas: 0` by default: ten thousand Deployments are then ten thousand ReplicaSets and no pods,
which is what the daemon's informers hold anyway — it never watches pods). One policy selects every
bench Deployment, so each is reconciled against the rules at start. For each size (ascending; the
cluster grows between sizes) a fresh `rollguard run` is started, watching all namespaces (the
Deployments are spread over namespaces of `PER_NAMESPACE`, which changes nothing for a cluster-wide watch):

* `ready_s`: spawn → `/readyz` answers 200 (first list of Deployments and ReplicaSets done);
* `settled_s`: spawn → the daemon's CPU drops under 5% over a 1 s window (the initial reconcile of every
  key is over; `/readyz` turns 200 before it);
* `ready_cpu_s`: the daemon's CPU seconds (utime+stime, /proc) from spawn to ready — steadier than
  `ready_s` on a loaded machine; `startup_cpu_s` likewise up to the end of the settle window;
* `rss_mib` after the idle window, `peak_rss_mib` (VmHWM) over the whole run;
* `idle_cpu_pct`: utime+stime over `idle_seconds` of an unchanging cluster, % of one core.

By default the objects have the shape a real API server gives them (`real_objects`): `managedFields` on
every Deployment and ReplicaSet and the `kubectl apply` annotation on Deployments — the simulator adds
neither, and they are most of a real object's size.

Size 0 is measured first as the baseline (an empty cluster: what the imports and the loop cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    DaemonProcess,
    bench_deployment,
    cpu_share,
    create_object,
    log_tail,
    proc_sample,
    running_daemon,
    wait_http_ok,
    wait_settled,
    write_rules,
)
from sim.cluster import running_cluster
from sim.resources import DEPLOYMENTS, REPLICASETS
from sim.store import Store, copy_json

PER_NAMESPACE = 100
"""Deployments per namespace: the simulator's controllers scan a namespace per sync, as the real ones scan
their informer's namespace index; 10,000 in one namespace would measure the simulator, not rollguard."""
LABELS = {"bench": "scale"}


def namespace_of(index: int) -> str:
    return f"scale-{index // PER_NAMESPACE:03d}"


# What a real API server adds to objects and the simulator does not: `managedFields` (server-side field
# ownership, on every object since 1.18) and, on Deployments applied with `kubectl apply`, the
# last-applied-configuration annotation. The shapes are those of a `kubectl apply`-ed Deployment and
# its controller-made ReplicaSet on Kubernetes 1.30.
_F: dict[str, Any] = {".": {}}
_CONTAINER = {"k:{\"name\":\"web\"}": {**_F, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {
    **_F, "k:{\"containerPort\":8000,\"protocol\":\"TCP\"}": {**_F, "f:containerPort": {}, "f:name": {},
                                                                "f:protocol": {}}},
    "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}}
_POD_SPEC = {"f:containers": _CONTAINER, "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {},
             "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}
_CONDITION = {**_F, "f:lastTransitionTime": {}, "f:lastUpdateTime": {}, "f:message": {}, "f:reason": {},
              "f:status": {}, "f:type": {}}


def _entry(manager: str, fields: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
    entry = {"manager": manager, "operation": "Update", "apiVersion": "apps/v1", "time": "2024-05-01T10:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


def deployment_managed_fields() -> list[dict[str, Any]]:
    return [
        _entry("kubectl-client-side-apply", {
            "f:metadata": {"f:annotations": {**_F, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                           "f:labels": {**_F, "f:app": {}, "f:bench": {}}},
            "f:spec": {"f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
                       "f:selector": {}, "f:strategy": {"f:rollingUpdate": {**_F, "f:maxSurge": {},
                                                                             "f:maxUnavailable": {}}, "f:type": {}},
                       "f:template": {"f:metadata": {"f:labels": {**_F, "f:app": {}, "f:bench": {}}},
                                      "f:spec": _POD_SPEC}}}),
        _entry("kube-controller-manager", {
            "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}},
            "f:status": {"f:conditions": {**_F, 'k:{"type":"Available"}': _CONDITION,
                                          'k:{"type":"Progressing"}': _CONDITION},
                         "f:observedGeneration": {}}}, subresource="status"),
    ]


def replicaset_managed_fields(owner_uid: str) -> list[dict[str, Any]]:
    return [
        _entry("kube-controller-manager", {
            "f:metadata": {"f:annotations": {**_F, "f:deployment.kubernetes.io/desired-replicas": {},
                                             "f:deployment.kubernetes.io/max-replicas": {},
                                             "f:deployment.kubernetes.io/revision": {}},
                           "f:labels": {**_F, "f:app": {}, "f:bench": {}, "f:pod-template-hash": {}},
                           "f:ownerReferences": {**_F, f'k:{{"uid":"{owner_uid}"}}': {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                "f:metadata": {"f:labels": {**_F, "f:app": {}, "f:bench": {}, "f:pod-template-hash": {}}},
                "f:spec": _POD_SPEC}}}),
        _entry("kube-controller-manager", {"f:status": {"f:observedGeneration": {}, "f:replicas": {}}},
               subresource="status"),
    ]


def as_applied(deployment: dict[str, Any]) -> dict[str, Any]:
    """`deployment` as `kubectl apply` leaves it on a real server: last-applied annotation and managedFields."""
    meta = deployment["metadata"]
    meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(
        deployment, separators=(",", ":"), sort_keys=True) + "\n"
    meta["managedFields"] = deployment_managed_fields()
    return deployment


def add_replicaset_managed_fields(store: Store, namespaces: list[str]) -> int:
    """Give every controller-made ReplicaSet in `namespaces` the managedFields a real server would."""
    count = 0
    for namespace in namespaces:
        for rs in list(store.list_objects(REPLICASETS, namespace)[0]):
            if "managedFields" in rs["metadata"]:
                continue
            owner = next((r.get("uid", "") for r in rs["metadata"].get("ownerReferences") or []), "")
            updated = copy_json(rs)
            updated["metadata"]["managedFields"] = replicaset_managed_fields(str(owner))
            store.replace(REPLICASETS, updated, namespace=namespace, name=rs["metadata"]["name"])
            count += 1
    return count

TARGET_RSS_MIB = 300.0
TARGET_IDLE_CPU_PCT = 2.0
TARGET_SIZE = 10_000


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "rollguard.io/v1", "kind": "RollbackPolicy", "metadata": {"name": "scale"},
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            "analysis": {"initialDelay": "30s", "interval": "15s", "bakeTime": "10m"},
            "signals": {"error_rate": {"prometheus": {"query": (
                'sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code=~"5.."}[1m]))'
                ' / sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}[1m]))')}}},
            "rules": [{"name": "error-rate", "when": "error_rate > 0.05", "action": "rollback",
                       "onInconclusive": "ignore"}],
        },
    }


_PROBE = """
import json, signal, sys, time, urllib.request
url, worst, gap, answers, last = sys.argv[1], 0.0, 0.0, 0, None
def report(*_):
    print(json.dumps({"worst": worst, "longest_gap": gap, "answers": answers}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
while True:
    asked = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            ok = resp.status == 200
    except OSError:
        ok = False
    answered = time.monotonic()
    if ok:
        if last is not None:
            worst, gap = max(worst, answered - asked), max(gap, answered - last)
        last, answers = answered, answers + 1
    time.sleep(0.02)
"""


class HealthWatch:
    """`/healthz` asked every 20 ms from spawn until the daemon is CPU-quiet, by a process of its own (the
    bench process also runs the simulated API server, whose work must not count as the daemon's
    stalls): worst answer time, and the longest time between two answers (what a kubelet liveness
    probe could see) once it first answered."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.longest_gap = 0.0
        self.answers = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, url: str) -> None:
        self._proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _PROBE, url,
                                                          stdout=asyncio.subprocess.PIPE)

    async def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = await self._proc.communicate()
        with contextlib.suppress(ValueError):
            figures = json.loads(out.decode().strip().splitlines()[-1])
            self.worst, self.longest_gap, self.answers = figures["worst"], figures["longest_gap"], figures["answers"]


async def _settle(daemon: DaemonProcess, *, threshold: float = 0.05, window: float = 1.0,
                  timeout: float = 180.0) -> float:
    """Seconds from spawn until one `window` in which the daemon used less than `threshold` of a core."""
    deadline = time.monotonic() + timeout
    before = daemon.sample()
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        after = daemon.sample()
        if cpu_share(before, after) < threshold:
            return before.at - daemon.spawned_at
        before = after
    return float("nan")


async def _process_quiet(pid: int, *, threshold: float = 0.1, window: float = 1.0, timeout: float) -> None:
    """Wait until process `pid` used less than `threshold` of a core over one `window` (seconds)."""
    deadline = time.monotonic() + timeout
    before = proc_sample(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        after = proc_sample(pid)
        if cpu_share(before, after) < threshold:
            return
        before = after
    raise TimeoutError(f"the simulated cluster was still busy after {timeout:g} s")


async def measure_size(cluster: Any, session: aiohttp.ClientSession, *, workdir: Path, rules: Path, size: int,
                       idle_seconds: float) -> dict[str, Any]:
    # No rollout happens in this scenario, so nothing is ever queried; a daemon refuses a Prometheus
    # signal without a Prometheus, hence an address where none listens.
    async with running_daemon(workdir=workdir, rules_dir=rules, kubeconfig=cluster.kubeconfig,
                              prometheus_url="http://127.0.0.1:9",
                              name=f"scale-{size}") as daemon:
        health = HealthWatch()
        await health.start(f"{daemon.url}/healthz")
        try:
            try:
                ready_at = await wait_http_ok(session, f"{daemon.url}/readyz", timeout=300, alive=daemon.alive)
            except (TimeoutError, RuntimeError) as exc:
                raise RuntimeError(f"{exc}\n{log_tail(daemon.log_path)}") from exc
            at_ready = daemon.sample()
            settled = await _settle(daemon)
        finally:
            await health.stop()
        before = daemon.sample()
        await asyncio.sleep(idle_seconds)
        after = daemon.sample()
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited during the idle window\n{log_tail(daemon.log_path)}")
        return {
            "deployments": size, "replicasets": size,
            "ready_s": round(ready_at - daemon.spawned_at, 2),
            "settled_s": round(settled, 2),
            "ready_cpu_s": round(at_ready.cpu_seconds, 2),
            "rss_at_ready_mib": round(at_ready.rss_mib, 1),
            "rss_mib": round(after.rss_mib, 1),
            "peak_rss_mib": round(after.hwm_mib, 1),
            "startup_cpu_s": round(before.cpu_seconds, 2),
            "idle_cpu_pct": round(100 * cpu_share(before, after), 2),
            "idle_window_s": idle_seconds,
            "healthz_worst_ms": round(1000 * health.worst, 1),
            "healthz_longest_gap_ms": round(1000 * health.longest_gap, 1),
            "healthz_answers": health.answers,
        }


async def run(*, sizes: list[int], idle_seconds: float = 20.0, replicas: int = 0, real_objects: bool = True,
              workdir: Path | None = None) -> dict[str, Any]:
    """Measure each size in `sizes` (plus the empty-cluster baseline); returns the JSON-able result."""
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-scale-") as tmp:
        work = workdir or Path(tmp)
        rules = write_rules(work / "rules", [policy()])
        rows: list[dict[str, Any]] = []
        async with running_cluster(workdir=work, speed=1.0) as cluster, aiohttp.ClientSession() as session:
            created = 0
            for size in [0, *sorted(set(sizes))]:
                fill_started = time.monotonic()
                for i in range(created, size):
                    obj = bench_deployment(f"web-{i:05d}", namespace_of(i), replicas=replicas, labels=LABELS)
                    create_object(cluster.store, DEPLOYMENTS, as_applied(obj) if real_objects else obj)
                created = max(created, size)
                namespaces = sorted({namespace_of(i) for i in range(size)})
                await wait_settled(cluster.store, namespaces=namespaces, expected=size, timeout=60 + size * 0.05)
                if real_objects:
                    add_replicaset_managed_fields(cluster.store, namespaces)
                    await wait_settled(cluster.store, namespaces=namespaces, expected=size, timeout=60)
                # Replacing every ReplicaSet above re-queues every Deployment in the simulated controllers,
                # which sync (without writing) for tens of seconds after the status has settled: the
                # daemon starts on a quiet cluster, not against controllers busy in the same process.
                await _process_quiet(os.getpid(), timeout=120)
                fill_s = time.monotonic() - fill_started
                row = await measure_size(cluster, session, workdir=work, rules=rules, size=size,
                                         idle_seconds=idle_seconds)
                row["cluster_fill_s"] = round(fill_s, 2)
                rows.append(row)
    largest = rows[-1]
    return {
        "scenario": "scale",
        "replicas_per_deployment": replicas,
        "deployments_per_namespace": PER_NAMESPACE,
        "object_shape": "real (managedFields, last-applied)" if real_objects else "simulator",
        "bytes_per_object_json": _object_sizes(real_objects),
        "idle_seconds": idle_seconds,
        "rows": rows,
        "targets": {"deployments": TARGET_SIZE, "rss_mib": TARGET_RSS_MIB, "idle_cpu_pct": TARGET_IDLE_CPU_PCT},
        "meets_targets": (largest["deployments"] >= TARGET_SIZE and largest["rss_mib"] < TARGET_RSS_MIB
                          and largest["idle_cpu_pct"] < TARGET_IDLE_CPU_PCT) if largest["deployments"] else None,
    }


def _object_sizes(real_objects: bool) -> dict[str, int]:
    """Rough JSON sizes of one bench Deployment and ReplicaSet as the daemon receives them."""
    deployment = bench_deployment("web-00000", namespace_of(0), labels=LABELS)
    if real_objects:
        deployment = as_applied(deployment)
    rs_fields = len(json.dumps(replicaset_managed_fields("0" * 36))) if real_objects else 0
    return {"deployment_spec_and_metadata": len(json.dumps(deployment)), "replicaset_managed_fields": rs_fields}
