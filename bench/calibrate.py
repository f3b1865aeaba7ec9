"""How fast this host runs the work the daemon does, so figures from two machines can be compared.

The benchmarks run on 2-core virtual machines whose speed differs from one day to the next by a factor
of two or more for the same code (bench/RESULTS.md). A figure such as "p95 lag 0.7 s" means little without
the speed of the host it came from, so every report carries these three readings, taken before the first
scenario and again after the last one (a host can also slow down during a long run):

* `python_loop_s`: a plain bytecode loop (5 million additions): the interpreter's speed;
* `json_decode_s`: decoding a ~2.7 MB Kubernetes list of 2,000 Deployments `COPIES` times, each result
  freed before the next decode: what the daemon's informers and Prometheus client spend their time on;
* `json_decode_kept_s`: the same decodes keeping every result, the heap growing into memory the process
  never touched, as it does during the daemon's start (on some virtual machines touching fresh memory
  costs more than the decode itself).

Each is the best of `ROUNDS` fresh interpreters (the bench process's own heap would colour the third;
a reading can only be slowed down by other work), in seconds: lower is faster. The readings are
reported, never compared with a threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

ROUNDS = 3
"""Fresh interpreters taking the readings; the best of each is reported."""

COPIES = 8
"""Decodes of the document per reading."""

_PROGRAM = r"""
import gc, json, sys, time

gc.disable()  # the collector's passes over the kept results would be timed too: that is the GC policy's cost

def timed(fn):
    started = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - started
    del result  # what `fn` kept is freed after the clock stops
    return elapsed

def loop():
    total = 0
    for i in range(5_000_000):
        total += i

def deployment(i):
    name = f"web-{i:05d}"
    labels = {"app": name, "team": "platform", "tier": "backend"}
    container = {"name": "app", "image": f"registry.example.com/{name}:v1.2.3", "ports": [{"containerPort": 8080}],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}, "imagePullPolicy": "IfNotPresent",
                 "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}]}
    managed = [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
                "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{k}": {} for k in labels}},
                             "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": f"ns-{i // 100:03d}", "uid": f"{i:08d}-0000-4000-8000-000000000000",
                         "resourceVersion": str(1000 + i), "generation": 2, "labels": labels,
                         "annotations": {"deployment.kubernetes.io/revision": "2"}, "managedFields": managed},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
            "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": 2}}

document = json.dumps({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "1"},
                       "items": [deployment(i) for i in range(2000)]}).encode()

def decode_freeing():
    for _ in range(COPIES):
        json.loads(document)  # freed at once

def decode_keeping():
    kept = [json.loads(document) for _ in range(COPIES)]
    return kept

kept_s = timed(decode_keeping)  # first, while this interpreter's heap is still small
json.dump({"json_decode_kept_s": kept_s, "json_decode_s": timed(decode_freeing), "python_loop_s": timed(loop),
           "json_document_mb": len(document) / 1e6}, sys.stdout)
"""


def host_speed(*, rounds: int = ROUNDS, timeout: float = 120.0) -> dict[str, Any]:
    """The three readings (seconds, rounded to the millisecond: the best of `rounds` fresh interpreters) and
    the document's size; `{"error": ...}` when they could not be taken (a report without them is still one)."""
    runs: list[dict[str, float]] = []
    try:
        for _ in range(rounds):
            out = subprocess.run([sys.executable, "-c", f"COPIES = {COPIES}\n{_PROGRAM}"], capture_output=True,
                                 text=True, timeout=timeout, check=True)
            runs.append(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    best = {key: round(min(run[key] for run in runs), 3) for key in runs[0]}
    return best | {"copies": COPIES, "rounds": rounds}
