"""Detection latency: first bad sample queryable in Prometheus → rollback PATCH → rollout complete again.

The whole stack of the end-to-end tests (`sim.demo.stack.running_stack`: simulated cluster, a real
Prometheus scraping every second, the Slack/PagerDuty receivers, the daemon in-process) with a policy
that rolls back at once (`for: 0s`) when the new pods' 5xx share exceeds 5%. Each run deploys a
bad image (12% errors) over a good one, on a Deployment of its own (the daemon caps rollbacks per
Deployment and hour, and remembers rolled-back templates), and takes three wall-clock times in the
bench process:

* `bad_at`: the first time the policy's own `error_rate` query, for the new pods, answers > 0.05
  (polled every 100 ms) — the first moment the daemon *could* know;
* `patch_at`: the simulated API server stores the rollback (a Store listener sees the Deployment's
  template image go back to the good one);
* `complete_at`: the rollout of the good template is complete again (what `kubectl rollout status`
  waits for: observedGeneration, updated = available = replicas).

The floor of `patch_at - bad_at` is the time to the next tick (uniform over one interval) plus one
query and the undo's three requests; the daemon evaluates "now" queries at the current second rounded
down (its coalescing tick), which may add up to one second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import logging_to, percentile, rolled_out, summary, write_rules
from daemon.kube.rollout_state import POD_TEMPLATE_HASH
from daemon.rules.templates import render_promql
from daemon.signals.base import SignalContext
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import Stack, running_stack
from sim.resources import DEPLOYMENTS, REPLICASETS
from sim.store import WatchEvent

NAMESPACE = "staging"
THRESHOLD = 0.05
GOOD = {"SIM_READY_DELAY": "1", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50"}
QUERY = ('sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code=~"5.."}[10s]))\n'
         '/\nsum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"}[10s]))\n')
POLL_S = 0.1
TARGET_EXTRA_S = 1.0
"""Target: p95 of `patch_at - bad_at` <= interval + this."""


def policy(interval: float) -> dict[str, Any]:
    return {
        "apiVersion": "rollguard.io/v1", "kind": "RollbackPolicy", "metadata": {"name": "bench-detection"},
        "spec": {
            "selector": {"namespaces": [NAMESPACE]},
            "analysis": {"initialDelay": "1s", "interval": f"{interval:g}s", "bakeTime": "10m"},
            "signals": {"error_rate": {"prometheus": {"query": QUERY}}},
            "rules": [{"name": "error-rate-over-5pct", "when": f"error_rate > {THRESHOLD}", "for": "0s",
                       "action": "rollback", "onInconclusive": "ignore"}],
        },
    }


def _image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


class _Watcher:
    """Times, from Store events, when the rollback was written and when the good rollout completed."""

    def __init__(self, *, name: str, bad_image: str, good_image: str) -> None:
        self.name = name
        self.bad_image = bad_image
        self.good_image = good_image
        self.new_hash: str | None = None
        self.patch_at: float | None = None
        self.complete_at: float | None = None

    def __call__(self, event: WatchEvent) -> None:
        if event.namespace != NAMESPACE or event.type == "DELETED":
            return
        obj = event.obj
        if event.bucket == REPLICASETS.bucket and self.new_hash is None:
            if event.name.startswith(f"{self.name}-") and _image(obj) == self.bad_image:
                self.new_hash = str(obj["metadata"].get("labels", {}).get(POD_TEMPLATE_HASH) or "") or None
        elif event.bucket == DEPLOYMENTS.bucket and event.name == self.name:
            image = _image(obj)
            if self.patch_at is None and image == self.good_image:
                self.patch_at = time.time()
            if self.patch_at is not None and self.complete_at is None and image == self.good_image \
                    and rolled_out(obj):
                self.complete_at = time.time()


async def _query(session: aiohttp.ClientSession, prometheus_url: str, promql: str) -> float | None:
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, KeyError, IndexError, ValueError):
        async with session.get(f"{prometheus_url}/api/v1/query", params={"query": promql},
                               timeout=aiohttp.ClientTimeout(total=2)) as resp:
            body = await resp.json()
        result = body["data"]["result"]
        if result:
            return float(result[0]["value"][1])
    return None


async def _until(predicate: Callable[[], bool], *, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if (error := stack.daemon_failed()) is not None:
            raise RuntimeError(f"the daemon died waiting for {what}: {error!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _one_run(stack: Stack, session: aiohttp.ClientSession, *, run: int, interval: float,
                   timeout: float) -> dict[str, Any]:
    # A Deployment per run: the daemon caps rollbacks per Deployment and hour (then asks a human), and
    # loop protection remembers rolled-back templates; a fresh Deployment is a first bad deploy each time.
    name = f"backend-{run}"
    good_image, bad_image = f"{name}:good", f"{name}:bad"
    await stack.apply(backend_service(name=name))
    await stack.apply(backend_deployment(good_image, name=name, env=GOOD, change_cause="deploy good"))
    await stack.kubectl("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=60s")
    # The moment a deploy goes bad is unrelated to the daemon's tick grid, to Prometheus' scrapes and to its
    # 5 s target-discovery batches; a random pause (seeded: repeatable) spreads that phase over one interval.
    await asyncio.sleep(random.Random(run).uniform(0, interval))
    watcher = _Watcher(name=name, bad_image=bad_image, good_image=good_image)
    store = stack.cluster.store
    prometheus_url = stack.cluster.prometheus_url
    assert prometheus_url is not None
    store.add_listener(watcher)
    try:
        applied_at = time.time()
        await stack.apply(backend_deployment(bad_image, name=name, env={**GOOD, "SIM_ERROR_RATIO": "0.12"},
                                             change_cause=f"deploy {bad_image}"))
        await _until(lambda: watcher.new_hash is not None, timeout=30, what="the bad ReplicaSet", stack=stack)
        ctx = SignalContext(namespace=NAMESPACE, deployment=name, revision=0, pod_template_hash=str(watcher.new_hash),
                            pod_prefix=f"{name}-{watcher.new_hash}-", labels={"app": name}, rollout_started_at=0.0)
        promql = render_promql(QUERY, ctx.template_variables())
        bad_at: float | None = None
        deadline = time.monotonic() + timeout
        while bad_at is None and watcher.patch_at is None:
            value = await _query(session, prometheus_url, promql)
            if value is not None and value > THRESHOLD:
                bad_at = time.time()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run}: the error rate never crossed {THRESHOLD} in Prometheus")
            await asyncio.sleep(POLL_S)
        try:
            await _until(lambda: watcher.complete_at is not None, timeout=timeout, stack=stack,
                         what=f"run {run}: the rollback to complete")
        except TimeoutError as exc:
            current = store.peek(DEPLOYMENTS, NAMESPACE, name) or {}
            raise TimeoutError(f"{exc} (bad sample seen: {bad_at is not None}, rollback written: "
                               f"{watcher.patch_at is not None}, image now {_image(current)}, status "
                               f"{current.get('status')})") from None
    finally:
        store.remove_listener(watcher)
    assert watcher.patch_at is not None
    assert watcher.complete_at is not None
    if bad_at is None:  # the rollback came before the bench saw the bad sample (between two polls)
        bad_at = watcher.patch_at
    # Its pods would go on being scraped and served: the next run starts on a quiet cluster.
    await stack.kubectl("delete", f"deployment/{name}", f"service/{name}", "-n", NAMESPACE, "--wait=false")
    return {"run": run, "image": bad_image, "bad_after_apply_s": round(bad_at - applied_at, 3),
            "to_patch_s": round(watcher.patch_at - bad_at, 3), "to_complete_s": round(watcher.complete_at - bad_at, 3)}


async def run(*, runs: int = 5, interval: float = 5.0, timeout: float = 90.0) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-detection-") as tmp:
        work = Path(tmp)
        rules = write_rules(work / "rules", [policy(interval)])
        # The daemon runs in this process: its log goes to a file, not over the bench's output.
        log_path = work / "daemon.log"
        with log_path.open("w") as log_file, logging_to(log_file):
            async with running_stack(workdir=work, rules_dir=rules, scrape_interval=1.0) as stack, \
                    aiohttp.ClientSession() as session:
                try:
                    for i in range(1, runs + 1):
                        results.append(await _one_run(stack, session, run=i, interval=interval, timeout=timeout))
                except Exception as exc:
                    log_file.flush()
                    lines = [line for line in log_path.read_text().splitlines() if '"backend-' in line][-12:]
                    raise RuntimeError(f"{exc}\n--- daemon log (backend) ---\n" + "\n".join(lines)) from exc
    to_patch = [r["to_patch_s"] for r in results]
    to_complete = [r["to_complete_s"] for r in results]
    p95 = percentile(to_patch, 95)
    return {
        "scenario": "detection",
        "interval_s": interval,
        "runs": results,
        "to_patch_s": summary(to_patch),
        "to_complete_s": summary(to_complete),
        "to_patch_intervals": {k: (round(v / interval, 2) if isinstance(v, float) else v)
                               for k, v in summary(to_patch).items()},
        "target_p95_s": interval + TARGET_EXTRA_S,
        "meets_target": p95 is not None and p95 <= interval + TARGET_EXTRA_S,
    }
