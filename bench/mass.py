"""Mass rollout: a cluster-wide image bump — every bench Deployment rolls within a minute, every one analysed.

Three processes besides Prometheus: the simulated cluster (real time, `speed` 1; its API server,
controllers and workloads, with a real Prometheus as its child) runs in a child process of its own
(`bench.mass_cluster`), `rollguard run` in another, and the bench process only drives and measures —
it changes images over HTTP, polls the daemon's API and `/metrics`, reads both processes' CPU from
/proc and parses the daemon's log. (Until the cluster had a process of its own, the simulated API
server shared the bench process with that work and was saturated at 10,000: figures that were not the
daemon's.) `count` Deployments (`replicas: 0`: lightweight, no pods; 100 per namespace) are created by
the cluster process straight into its store before the daemon starts; the bench then changes all their
images over HTTP as fast as the simulated API server takes it, so `count` analyses start within about
a minute. The policy is the `analyses` scenario's (interval 10 s, bake time 1 h, two Prometheus
signals: the Deployment's own error ratio, a distinct query per analysis of ONE shape, and a global
one: two distinct query shapes). The daemon runs with `ROLLGUARD_SPREAD_FIRST_TICK` and batching as
given (`spread`, `batch`).

After every analysis is live and has had its first tick, over a window of `window_intervals` intervals:

* `lag_s`: each evaluation's log time minus its scheduled tick (the analysis' `firstTickAt` from
  `/api/v1/analyses` + k × interval);
* `missed_ticks`: scheduled ticks in the window with no evaluation, and `analyses_missing_a_tick`;
* `cpu_pct`, `rss_mib`: the daemon's, from /proc; `cpu_ms_per_evaluation`: its CPU time in the window
  (utime + stime) per evaluation of the window;
* `prom_qps`: Prometheus' own `/api/v1/query` request counter, per second, against `shapes` (2) and
  against `uncoalesced_qps` (one query per signal per tick); the daemon's `queries_saved` by batching;
* what the daemon itself reports on `/metrics` over the window: `ticks_skipped_by_daemon`
  (`rollguard_ticks_skipped_total`) and `daemon_lag` — of the evaluations it finished in the window,
  the share within 0.5 s and within 1 s of their planned tick (`rollguard_evaluation_lag_seconds`,
  which has buckets at both);
* the simulated cluster's process: `sim_cpu_s_to_all_analysing` (CPU seconds from the first image
  change until every analysis was live: the rollouts and the daemon's start-up writes), `sim_cpu_pct`
  in the window, `sim_rss_mib`, and `sim_settled_s` (its controllers rolling out the initial objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import analyses
from bench.common import (
    DaemonProcess,
    cpu_share,
    log_tail,
    prometheus_query_requests,
    running_daemon,
    summary,
    wait_http_ok,
    write_rules,
)
from bench.mass_cluster import SimProcess, running_mass_cluster

POLICY = str(analyses.policy()["metadata"]["name"])
SHAPES = 2
"""Distinct query shapes of the policy: the per-Deployment error ratio and the global one."""
TARGET_CPU_PCT = 50.0
LAG_HISTOGRAM = "rollguard_evaluation_lag_seconds"
LAG_BOUNDS_S = (0.5, 1.0)
"""The daemon's own lag figures: shares of its evaluations within these (buckets of its histogram)."""


def run_targets(count: int) -> dict[str, float]:
    """The goals a run of `count` analyses is shown against (issue 21): the lag's p95 under 0.5 s up to
    1,000 analyses and under 1 s beyond; under half a core; at most two requests per shape per second."""
    return {"lag_p95_s": 0.5 if count <= 1000 else 1.0, "cpu_pct": TARGET_CPU_PCT, "prom_qps_max": 2 * SHAPES,
            "missed_ticks": 0}


async def daemon_metrics(session: aiohttp.ClientSession, daemon: DaemonProcess) -> dict[str, float]:
    """The daemon's `/metrics` samples, by name with labels as written (`name{label="v"}`)."""
    async with session.get(f"{daemon.url}/metrics") as resp:
        return parse_metrics(await resp.text())


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of the Prometheus text format, by name with labels as written (`name{label="v"}`)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


def lag_shares(before: Mapping[str, float], after: Mapping[str, float], bounds: Sequence[float] = LAG_BOUNDS_S
               ) -> dict[str, Any]:
    """From two `/metrics` readings: the evaluations the daemon observed in between in
    `rollguard_evaluation_lag_seconds`, and the share of them at most each of `bounds` late (the
    histogram's cumulative buckets `le` = bound: exact when the histogram has a bucket there)."""
    def bucket(samples: Mapping[str, float], bound: float) -> float:
        for key, value in samples.items():
            if key.startswith(LAG_HISTOGRAM + "_bucket{"):
                le = key.split('le="', 1)[1].split('"', 1)[0]
                if le != "+Inf" and float(le) == bound:
                    return value
        raise KeyError(f"{LAG_HISTOGRAM} has no bucket at {bound:g} s")

    count = after.get(LAG_HISTOGRAM + "_count", 0.0) - before.get(LAG_HISTOGRAM + "_count", 0.0)
    shares = {f"within_{bound:g}_s": (round((bucket(after, bound) - bucket(before, bound)) / count, 4)
                                      if count > 0 else None) for bound in bounds}
    return {"evaluations": round(count), **shares}


class StartedAnalyses:
    """The bench policy's analyses the daemon has logged as started (`analysis started`), read from its
    log as it grows (only the new complete lines each time)."""

    def __init__(self, log_path: Path) -> None:
        self._path = log_path
        self._offset = 0
        self._keys: set[tuple[str, str]] = set()

    def count(self) -> int:
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for raw in chunk[:end].splitlines():
            if b'"analysis started"' not in raw:
                continue
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "analysis started" and line.get("policy") == POLICY:
                    self._keys.add((str(line.get("namespace")), str(line.get("deployment"))))
        return len(self._keys)


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
        async with running_mass_cluster(workdir=work, count=count, scrape_interval=scrape_interval) as cluster, \
                aiohttp.ClientSession() as session:
            env = {"ROLLGUARD_SPREAD_FIRST_TICK": str(spread).lower(), "ROLLGUARD_PROMETHEUS_BATCH": str(batch).lower()}
            async with running_daemon(workdir=work, rules_dir=rules, kubeconfig=cluster.kubeconfig,
                                      prometheus_url=cluster.prometheus_url, name="mass", env=env) as daemon:
                try:
                    await wait_http_ok(session, f"{daemon.url}/readyz", timeout=300, alive=daemon.alive)
                    return await _measure(session, cluster, daemon, count, interval=interval, spread=spread,
                                          batch=batch, warmup_intervals=warmup_intervals,
                                          window_intervals=window_intervals)
                except Exception as exc:
                    raise RuntimeError(f"{exc!r}\n--- daemon log tail ---\n{log_tail(daemon.log_path)}"
                                       f"\n--- simulated cluster log tail ---\n{log_tail(cluster.log_path)}") from exc


async def _measure(session: aiohttp.ClientSession, cluster: SimProcess, daemon: DaemonProcess, count: int, *,
                   interval: float, spread: bool, batch: bool, warmup_intervals: float,
                   window_intervals: float) -> dict[str, Any]:
    triggered, sim_triggered = time.monotonic(), cluster.sample()
    await analyses._roll_out(session, cluster.api_url, range(count), "bench:v2")
    trigger_s = time.monotonic() - triggered
    deadline = time.monotonic() + 120 + count * 0.05
    started = StartedAnalyses(daemon.log_path)
    live: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        # The daemon's log says when all have started; its API (10,000 analyses: megabytes of JSON the
        # daemon would build every poll while it starts them) is asked only then, to confirm.
        if started.count() >= count:
            live = await analyses._analyses(session, daemon)
            if len(live) >= count:
                break
        if not daemon.alive():
            raise RuntimeError("the daemon exited")
        await asyncio.sleep(2)
    else:
        raise TimeoutError(f"only {started.count()}/{count} analyses started ({len(live)} running when last "
                           "asked) after the rollouts")
    all_live_s = time.monotonic() - triggered
    sim_live = cluster.sample()
    first_ticks = {(str(a["namespace"]), str(a["deployment"])): float(a["firstTickAt"]) for a in live}
    # Every analysis has had its first tick (at most one interval + 1 s after it started) before the window.
    await asyncio.sleep(max(0.0, max(first_ticks.values()) - time.time()) + warmup_intervals * interval)
    window = window_intervals * interval
    metrics_before = await daemon_metrics(session, daemon)
    queries_before = await prometheus_query_requests(session, cluster.prometheus_url)
    wall_before = time.time()
    cpu_before, sim_before = daemon.sample(), cluster.sample()
    await asyncio.sleep(window)
    cpu_after, sim_after = daemon.sample(), cluster.sample()
    wall_after = time.time()
    queries_after = await prometheus_query_requests(session, cluster.prometheus_url)
    metrics_after = await daemon_metrics(session, daemon)
    await asyncio.sleep(interval)  # the evaluations of the window's last ticks land in the log
    ticks = tick_figures(daemon.log_lines(), first_ticks, since=wall_before, until=wall_after, interval=interval)

    def delta(name: str) -> float:
        return metrics_after.get(name, 0.0) - metrics_before.get(name, 0.0)

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
        "queries_saved_per_s": round(delta("rollguard_prometheus_queries_saved_total") / window, 1),
        # What the daemon itself counted (`/metrics`) in the window: ticks it skipped after a slow one (the
        # log-based `missed_ticks` also counts analyses that had no evaluation at all in the window), and
        # its lag histogram (planned tick → verdict) of the evaluations it finished in the window.
        "ticks_skipped_by_daemon": round(delta("rollguard_ticks_skipped_total")),
        "daemon_lag": lag_shares(metrics_before, metrics_after),
        # The simulated cluster's process (API server, controllers, workloads; not Prometheus): from the
        # first image change until every analysis was live (the rollouts and the daemon's start-up
        # writes), and in the window.
        "sim_cpu_s_to_all_analysing": round(sim_live.cpu_seconds - sim_triggered.cpu_seconds, 1),
        "sim_cpu_pct": round(100 * cpu_share(sim_before, sim_after), 1), "sim_rss_mib": round(sim_after.rss_mib, 1),
        "sim_settled_s": cluster.settled_s,
        "targets": run_targets(count),
    }
