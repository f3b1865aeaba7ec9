"""Mass rollout: a cluster-wide image bump — every bench Deployment rolls within a minute, every one analysed.

The simulated cluster (real time, `speed` 1) and a real Prometheus run in the bench process;
`rollguard run` is a separate process. `count` Deployments (`replicas: 0`: lightweight, no pods; 100
per namespace) exist before the daemon starts; the bench then changes all their images over HTTP as
fast as the simulated API server takes it, so `count` analyses start within about a minute. The policy
is the `analyses` scenario's (interval 10 s, bake time 1 h, two Prometheus signals: the Deployment's own
error ratio, a distinct query per analysis of ONE shape, and a global one: two distinct query shapes).
The daemon runs with `ROLLGUARD_SPREAD_FIRST_TICK` and batching as given (`spread`, `batch`).

After every analysis is live and has had its first tick, over a window of `window_intervals` intervals:

* `lag_s`: each evaluation's log time minus its scheduled tick (the analysis' `firstTickAt` from
  `/api/v1/analyses` + k × interval);
* `missed_ticks`: scheduled ticks in the window with no evaluation, and `analyses_missing_a_tick`;
* `cpu_pct`, `rss_mib`: the daemon's, from /proc; `cpu_ms_per_evaluation`: its CPU time in the window
  (utime + stime) per evaluation of the window;
* `prom_qps`: Prometheus' own `/api/v1/query` request counter, per second, against `shapes` (2) and
  against `uncoalesced_qps` (one query per signal per tick); the daemon's `queries_saved` by batching.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import analyses
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

SHAPES = 2
"""Distinct query shapes of the policy: the per-Deployment error ratio and the global one."""
TARGET_LAG_P95_S = 1.0
TARGET_CPU_PCT = 50.0


async def _daemon_metric(session: aiohttp.ClientSession, daemon: DaemonProcess, name: str) -> float:
    async with session.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def tick_figures(log_lines: list[dict[str, Any]], first_ticks: dict[tuple[str, str], float], *, since: float,
                 until: float, interval: float) -> dict[str, Any]:
    """Lag of every evaluation of a tick scheduled in [since, until) (epoch s), and the ticks with none."""
    seen: dict[tuple[str, str], set[int]] = {}
    lag_values: list[float] = []
    for line in log_lines:
        if line.get("event") != "evaluation":
            continue
        key = (str(line.get("namespace")), str(line.get("deployment")))
        first = first_ticks.get(key)
        if first is None:
            continue
        at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()
        k = int((at - first) // interval) if at >= first else -1
        scheduled = first + k * interval
        if k < 0 or not since <= scheduled < until:
            continue
        seen.setdefault(key, set()).add(k)
        lag_values.append(at - scheduled)
    missed = 0
    missing = 0
    for key, first in first_ticks.items():
        expected = {k for k in range(int((until - first) // interval) + 1) if since <= first + k * interval < until}
        lost = len(expected - seen.get(key, set()))
        missed += lost
        missing += lost > 0
    return {"lag_s": summary(lag_values), "evaluations": len(lag_values), "missed_ticks": missed,
            "analyses_missing_a_tick": missing}


async def run(*, count: int, interval: float = analyses.INTERVAL_S, warmup_intervals: float = 1.0,
              window_intervals: float = 3.0, spread: bool = True, batch: bool = True,
              scrape_interval: float = 5.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-mass-") as tmp:
        work = Path(tmp)
        rules = write_rules(work / "rules", [analyses.policy(interval)])
        async with running_cluster(workdir=work, speed=1.0, with_prometheus=True,
                                   scrape_interval=scrape_interval) as cluster, aiohttp.ClientSession() as session:
            assert cluster.prometheus_url is not None
            create_object(cluster.store, DEPLOYMENTS, backend_deployment(
                "backend:v1", namespace=analyses.TRAFFIC_NAMESPACE, name="traffic", replicas=3,
                env={"SIM_READY_DELAY": "0", "SIM_ERROR_RATIO": "0.01", "SIM_RPS": "50"}))
            for i in range(count):
                create_object(cluster.store, DEPLOYMENTS, bench_deployment(
                    analyses.name_of(i), analyses.namespace_of(i), labels=analyses.LABELS))
            namespaces = sorted({analyses.namespace_of(i) for i in range(count)})
            await wait_settled(cluster.store, namespaces=namespaces, expected=count, timeout=120 + count * 0.05)
            env = {"ROLLGUARD_SPREAD_FIRST_TICK": str(spread).lower(), "ROLLGUARD_PROMETHEUS_BATCH": str(batch).lower()}
            async with running_daemon(workdir=work, rules_dir=rules, kubeconfig=cluster.kubeconfig,
                                      prometheus_url=cluster.prometheus_url, name="mass", env=env) as daemon:
                try:
                    await wait_http_ok(session, f"{daemon.url}/readyz", timeout=300, alive=daemon.alive)
                    return await _measure(session, cluster, daemon, count, interval=interval, spread=spread,
                                          batch=batch, warmup_intervals=warmup_intervals,
                                          window_intervals=window_intervals)
                except Exception as exc:
                    raise RuntimeError(f"{exc!r}\n--- daemon log tail ---\n{log_tail(daemon.log_path)}") from exc


async def _measure(session: aiohttp.ClientSession, cluster: Any, daemon: DaemonProcess, count: int, *,
                   interval: float, spread: bool, batch: bool, warmup_intervals: float,
                   window_intervals: float) -> dict[str, Any]:
    triggered = time.monotonic()
    await analyses._roll_out(session, cluster.api_url, range(count), "bench:v2")
    trigger_s = time.monotonic() - triggered
    deadline = time.monotonic() + 120 + count * 0.05
    live: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        live = await analyses._analyses(session, daemon)
        if len(live) >= count:
            break
        if not daemon.alive():
            raise RuntimeError("the daemon exited")
        await asyncio.sleep(2)
    else:
        raise TimeoutError(f"only {len(live)}/{count} analyses running after the rollouts")
    all_live_s = time.monotonic() - triggered
    first_ticks = {(str(a["namespace"]), str(a["deployment"])): float(a["firstTickAt"]) for a in live}
    # Every analysis has had its first tick (at most one interval + 1 s after it started) before the window.
    await asyncio.sleep(max(0.0, max(first_ticks.values()) - time.time()) + warmup_intervals * interval)
    window = window_intervals * interval
    saved_before = await _daemon_metric(session, daemon, "rollguard_prometheus_queries_saved_total")
    skipped_before = await _daemon_metric(session, daemon, "rollguard_ticks_skipped_total")
    queries_before = await prometheus_query_requests(session, cluster.prometheus_url)
    wall_before = time.time()
    cpu_before = daemon.sample()
    await asyncio.sleep(window)
    cpu_after = daemon.sample()
    wall_after = time.time()
    queries_after = await prometheus_query_requests(session, cluster.prometheus_url)
    saved_after = await _daemon_metric(session, daemon, "rollguard_prometheus_queries_saved_total")
    skipped_after = await _daemon_metric(session, daemon, "rollguard_ticks_skipped_total")
    await asyncio.sleep(interval)  # the evaluations of the window's last ticks land in the log
    ticks = tick_figures(daemon.log_lines(), first_ticks, since=wall_before, until=wall_after, interval=interval)
    prom_qps = (queries_after - queries_before) / window
    return {
        "scenario": "mass_rollout",
        "analyses": count, "live": len(live), "interval_s": interval, "spread_first_tick": spread, "batch": batch,
        "rollouts_triggered_s": round(trigger_s, 1), "all_analysing_after_s": round(all_live_s, 1),
        "window_s": round(wall_after - wall_before, 1),
        "cpu_pct": round(100 * cpu_share(cpu_before, cpu_after), 1), "rss_mib": round(cpu_after.rss_mib, 1),
        # The daemon's CPU seconds in the window per evaluation logged in it: robust on a busy machine,
        # where the lag is not.
        "cpu_ms_per_evaluation": round(1000 * (cpu_after.cpu_seconds - cpu_before.cpu_seconds)
                                       / max(1, ticks["evaluations"]), 3),
        **ticks,
        "expected_evaluations": round(count * window / interval),
        "prom_qps": round(prom_qps, 2), "shapes": SHAPES, "uncoalesced_qps": round(count * SHAPES / interval, 1),
        "queries_saved_per_s": round((saved_after - saved_before) / window, 1),
        # What the daemon itself counted (`/metrics`): ticks it skipped after a slow one. The log-based
        # `missed_ticks` also counts analyses that had no evaluation at all in the window.
        "ticks_skipped_by_daemon": round(skipped_after - skipped_before),
        "targets": {"lag_p95_s": TARGET_LAG_P95_S, "cpu_pct": TARGET_CPU_PCT, "prom_qps_max": 2 * SHAPES,
                    "missed_ticks": 0},
    }
