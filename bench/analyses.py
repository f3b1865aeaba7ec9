"""Concurrent analyses: the daemon's CPU share, evaluation lag and Prometheus queries per second.

The simulated cluster and a real Prometheus run in the bench process; `rollguard run` is a separate
process (JSON logs to a file). The largest count of bench Deployments (`replicas: 0`, 100 per namespace)
exists before the daemon starts; for each stage (ascending counts, e.g. 100 → 500 → 1,000) the bench
changes the image of the next Deployments over HTTP, so that many rollouts are analysed at once. The
policy (`interval: 10s`, `bakeTime: 1h`, so no analysis ends during the run) measures two Prometheus
signals per tick:

* `error_rate`: the Deployment's own pods (templated: a distinct query per analysis);
* `cluster_error_rate`: a global query, identical for every analysis — which the daemon must coalesce
  (one request per coalescing tick, however many analyses ask).

A small `traffic` Deployment (3 pods of the simulated workload) gives Prometheus real series to
evaluate; the bench Deployments have no pods, so their own query is an empty vector (inconclusive,
ignored by the rule) — what the daemon does per tick is the same either way.

Per stage, after a warm-up of `warmup_intervals` intervals (every new analysis has ticked, the
start-up writes are over), over a window of `window_intervals` intervals:

* `cpu_pct`: the daemon's utime+stime over the window, % of one core;
* `lag_s`: for every evaluation logged in the window, its log time minus its scheduled tick
  (`startedAt` from `/api/v1/analyses` + `initialDelay` + k × `interval`; valid while lag < interval,
  so `evals_per_interval` ≈ 1.0 is reported alongside — less means ticks were skipped);
* `prom_qps`: Prometheus' own `prometheus_http_requests_total{handler="/api/v1/query"}` delta per second,
  next to what one request per signal per tick would be (`uncoalesced_qps`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    DaemonProcess,
    bench_deployment,
    cpu_share,
    create_object,
    log_tail,
    prometheus_query_requests,
    running_daemon,
    summary,
    wait_http_ok,
    wait_settled,
    write_rules,
)
from sim.cluster import running_cluster
from sim.demo.manifests import backend_deployment
from sim.resources import DEPLOYMENTS

PER_NAMESPACE = 100
LABELS = {"bench": "analyses"}
INTERVAL_S = 10.0
INITIAL_DELAY_S = 2.0
TRAFFIC_NAMESPACE = "bench-traffic"

TARGET_CPU_PCT = 50.0
TARGET_LAG_P95_S = 1.0
TARGET_ANALYSES = 1000


def namespace_of(index: int) -> str:
    return f"analyses-{index // PER_NAMESPACE:03d}"


def name_of(index: int) -> str:
    return f"svc-{index:05d}"


def policy(interval: float = INTERVAL_S) -> dict[str, Any]:
    own = 'http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*"'
    return {
        "apiVersion": "rollguard.io/v1", "kind": "RollbackPolicy", "metadata": {"name": "bench-analyses"},
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            "analysis": {"initialDelay": f"{INITIAL_DELAY_S:g}s", "interval": f"{interval:g}s", "bakeTime": "1h"},
            "signals": {
                "error_rate": {"prometheus": {
                    "query": f'sum(rate({own},code=~"5.."}}[1m])) / sum(rate({own}}}[1m]))'}},
                "cluster_error_rate": {"prometheus": {
                    "query": 'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))'}},
            },
            "rules": [
                {"name": "error-rate", "when": "error_rate > 0.05", "for": "1m", "action": "rollback",
                 "onInconclusive": "ignore"},
                {"name": "cluster-errors", "when": "cluster_error_rate > 0.5", "action": "review",
                 "onInconclusive": "ignore"},
            ],
        },
    }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _roll_out(session: aiohttp.ClientSession, api_url: str, indices: range, image: str) -> None:
    """Change the image of Deployments `indices` over HTTP (a JSON merge patch, as `kubectl set image` would)."""
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        body = {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8000}]}]}}}}
        url = f"{api_url}/apis/apps/v1/namespaces/{namespace_of(i)}/deployments/{name_of(i)}"
        async with semaphore, session.patch(url, json=body,
                                            headers={"Content-Type": "application/merge-patch+json"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"PATCH {url}: {resp.status} {await resp.text()}")

    await asyncio.gather(*(one(i) for i in indices))


async def _analyses(session: aiohttp.ClientSession, daemon: DaemonProcess) -> list[dict[str, Any]]:
    async with session.get(f"{daemon.url}/api/v1/analyses") as resp:
        body = await resp.json()
    return [a for a in body["analyses"] if a.get("policy") == "bench-analyses" and a.get("phase") == "analysing"]


async def _daemon_evaluations(session: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    async with session.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("rollguard_evaluations_total "):
            return float(line.split()[1])
    return 0.0


def lags(log_lines: list[dict[str, Any]], started: dict[tuple[str, str], float], *, since: float, until: float,
         interval: float, initial_delay: float) -> tuple[list[float], dict[tuple[str, str], int]]:
    """Lag of every evaluation logged in [since, until) (epoch s), and evaluations per analysis."""
    found: list[float] = []
    counts: dict[tuple[str, str], int] = {}
    for line in log_lines:
        if line.get("event") != "evaluation":
            continue
        key = (str(line.get("namespace")), str(line.get("deployment")))
        start = started.get(key)
        if start is None:
            continue
        at = _epoch(str(line["timestamp"]))
        if not since <= at < until:
            continue
        first_tick = start + initial_delay
        found.append((at - first_tick) % interval if at >= first_tick else 0.0)
        counts[key] = counts.get(key, 0) + 1
    return found, counts


async def run(*, counts: list[int], interval: float = INTERVAL_S, warmup_intervals: float = 2.0,
              window_intervals: float = 3.0, scrape_interval: float = 5.0) -> dict[str, Any]:
    counts = sorted(set(counts))
    largest = counts[-1]
    stages: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-analyses-") as tmp:
        work = Path(tmp)
        rules = write_rules(work / "rules", [policy(interval)])
        async with running_cluster(workdir=work, speed=1.0, with_prometheus=True,
                                   scrape_interval=scrape_interval) as cluster, \
                aiohttp.ClientSession() as session:
            assert cluster.prometheus_url is not None
            create_object(cluster.store, DEPLOYMENTS, backend_deployment(
                "backend:v1", namespace=TRAFFIC_NAMESPACE, name="traffic", replicas=3,
                env={"SIM_READY_DELAY": "0", "SIM_ERROR_RATIO": "0.01", "SIM_RPS": "50"}))
            for i in range(largest):
                create_object(cluster.store, DEPLOYMENTS, bench_deployment(name_of(i), namespace_of(i),
                                                                           labels=LABELS))
            namespaces = sorted({namespace_of(i) for i in range(largest)})
            await wait_settled(cluster.store, namespaces=namespaces, expected=largest, timeout=120)
            async with running_daemon(workdir=work, rules_dir=rules, kubeconfig=cluster.kubeconfig,
                                      prometheus_url=cluster.prometheus_url, name="analyses") as daemon:
                try:
                    await wait_http_ok(session, f"{daemon.url}/readyz", timeout=120, alive=daemon.alive)
                    done = 0
                    for count in counts:
                        stages.append(await _stage(session, cluster, daemon, done, count, interval=interval,
                                                   warmup_intervals=warmup_intervals,
                                                   window_intervals=window_intervals))
                        done = count
                except Exception as exc:
                    raise RuntimeError(f"{exc!r}\n--- daemon log tail ---\n{log_tail(daemon.log_path)}") from exc
    last = stages[-1]
    return {
        "scenario": "analyses",
        "interval_s": interval,
        "initial_delay_s": INITIAL_DELAY_S,
        "signals_per_analysis": 2,
        "prometheus_scrape_interval_s": scrape_interval,
        "warmup_s": warmup_intervals * interval,
        "window_s": window_intervals * interval,
        "stages": stages,
        "targets": {"analyses": TARGET_ANALYSES, "cpu_pct": TARGET_CPU_PCT, "lag_p95_s": TARGET_LAG_P95_S},
        "meets_targets": (last["analyses"] >= TARGET_ANALYSES and last["cpu_pct"] < TARGET_CPU_PCT
                          and (last["lag_s"]["p95"] or 0) < TARGET_LAG_P95_S),
    }


async def _stage(session: aiohttp.ClientSession, cluster: Any, daemon: DaemonProcess, done: int, count: int, *,
                 interval: float, warmup_intervals: float, window_intervals: float) -> dict[str, Any]:
    triggered = time.monotonic()
    await _roll_out(session, cluster.api_url, range(done, count), "bench:v2")
    trigger_s = time.monotonic() - triggered
    deadline = time.monotonic() + 60 + count * 0.05
    live: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        live = await _analyses(session, daemon)
        if len(live) >= count:
            break
        if not daemon.alive():
            raise RuntimeError("the daemon exited")
        await asyncio.sleep(0.5)
    else:
        raise TimeoutError(f"only {len(live)}/{count} analyses running after the rollouts")
    all_live_s = time.monotonic() - triggered
    await asyncio.sleep(warmup_intervals * interval)
    window = window_intervals * interval
    evals_before = await _daemon_evaluations(session, daemon)
    queries_before = await prometheus_query_requests(session, cluster.prometheus_url)
    wall_before = time.time()
    cpu_before = daemon.sample()
    await asyncio.sleep(window)
    cpu_after = daemon.sample()
    wall_after = time.time()
    queries_after = await prometheus_query_requests(session, cluster.prometheus_url)
    evals_after = await _daemon_evaluations(session, daemon)
    live = await _analyses(session, daemon)
    started = {(str(a["namespace"]), str(a["deployment"])): float(a["startedAt"]) for a in live}
    # Lines are flushed per line (PYTHONUNBUFFERED); give the last ones a moment to land.
    await asyncio.sleep(0.2)
    lag_values, per_analysis = lags(daemon.log_lines(), started, since=wall_before, until=wall_after,
                                    interval=interval, initial_delay=INITIAL_DELAY_S)
    expected_evals = count * window / interval
    signals = 2
    with contextlib.suppress(ZeroDivisionError):
        per_interval = len(lag_values) / expected_evals
    return {
        "analyses": count,
        "live": len(live),
        "rollouts_triggered_s": round(trigger_s, 2),
        "all_analysing_after_s": round(all_live_s, 2),
        "cpu_pct": round(100 * cpu_share(cpu_before, cpu_after), 1),
        "rss_mib": round(cpu_after.rss_mib, 1),
        "lag_s": summary(lag_values),
        "evals_per_interval": round(per_interval, 3),
        "analyses_evaluated_in_window": len(per_analysis),
        "evaluations_counted": round(evals_after - evals_before),
        "prom_qps": round((queries_after - queries_before) / window, 2),
        "uncoalesced_qps": round(count * signals / interval, 2),
        "window_s": round(wall_after - wall_before, 1),
    }
