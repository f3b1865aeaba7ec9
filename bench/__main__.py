"""`make bench` = `.venv/bin/python -m bench [options]`: run the scenarios, print JSON and a short table.

    python -m bench                                  # everything, default sizes (about 8 minutes)
    python -m bench --only detection --runs 10       # one scenario
    python -m bench --only alert_push --alert-runs 20  # webhook → rollback PATCH (needs Alertmanager)
    python -m bench --scale-sizes 1000,5000          # smaller scale run
    python -m bench --json out.json                  # also write the JSON to a file

The JSON (stdout) carries the machine (with its speed before and after the scenarios: `bench.calibrate`),
the command line and every scenario's figures; the table
(stderr, so the JSON stays parseable) has one line per figure with its target. A scenario that fails
is recorded with its error and the others still run; the exit code is then 1. Timings are never
asserted: the machine is shared, so compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import alert_push, analyses, common, detection, mass, rollback_cost, rules_cost, scale, sim_scale
from bench.calibrate import host_speed
from bench.common import logging_to, machine

SCENARIOS = ("rules_cost", "rollback_cost", "detection", "alert_push", "scale", "analyses", "sim_scale", "mass_rollout")
DEFAULT_SCENARIOS = SCENARIOS[:-1]
"""`mass_rollout` (10,000 rollouts, about 5 minutes) runs only when asked for with --only."""


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1000,5000") from None


def _scenarios(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=_scenarios, default=list(DEFAULT_SCENARIOS), metavar="NAME[,NAME]",
                        help=f"scenarios to run (default: {','.join(DEFAULT_SCENARIOS)}; "
                             f"known: {','.join(SCENARIOS)})")
    parser.add_argument("--runs", type=int, default=5, help="detection: repeated bad deploys (default 5)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="detection: the policy's evaluation interval in seconds (default 5)")
    parser.add_argument("--alert-runs", type=int, default=20,
                        help="alert_push: bad deploys rolled back on a pushed alert (default 20)")
    parser.add_argument("--undo-repetitions", type=int, default=20,
                        help="rollback_cost: alternating undo pairs (default 20)")
    parser.add_argument("--scale-sizes", type=_ints, default=[1000, 5000, 10000], metavar="N[,N]",
                        help="scale: watched Deployments per step (default 1000,5000,10000)")
    parser.add_argument("--idle-seconds", type=float, default=20.0,
                        help="scale: idle window per size in seconds (default 20)")
    parser.add_argument("--analyses", type=_ints, default=[100, 500, 1000], metavar="N[,N]",
                        help="analyses: concurrent analyses per stage (default 100,500,1000)")
    parser.add_argument("--analysis-interval", type=float, default=10.0,
                        help="analyses: the policy's evaluation interval in seconds (default 10)")
    parser.add_argument("--warmup-intervals", type=float, default=2.0,
                        help="analyses: intervals to wait before measuring a stage (default 2)")
    parser.add_argument("--window-intervals", type=float, default=3.0,
                        help="analyses: intervals measured per stage (default 3)")
    parser.add_argument("--rules-iterations", type=int, default=20_000,
                        help="rules_cost: evaluations per timing (default 20000)")
    parser.add_argument("--sim-sizes", type=_ints, default=[2000], metavar="N[,N]",
                        help="sim_scale: Deployments with 3 replicas each in the simulator (default 2000)")
    parser.add_argument("--mass-counts", type=_ints, default=[10_000], metavar="N[,N]",
                        help="mass_rollout: simultaneous rollouts per run, one fresh cluster and daemon each "
                             "(default 10000; 1000,1000,1000,1000,1000 repeats the 1,000 stage five times)")
    parser.add_argument("--mass-no-spread", action="store_true",
                        help="mass_rollout: without ROLLGUARD_SPREAD_FIRST_TICK (every first tick at once)")
    parser.add_argument("--mass-no-batch", action="store_true",
                        help="mass_rollout: with ROLLGUARD_PROMETHEUS_BATCH=false (one request per query)")
    parser.add_argument("--daemon", type=Path, metavar="PATH",
                        help="the `rollguard` executable the daemon scenarios start (default: this venv's). "
                             "`make bench-image-deps` makes .venv-image/bin/rollguard: the daemon with only "
                             "the image's dependencies, none of the test tools'")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON result to PATH")
    return parser


def _jobs(args: argparse.Namespace) -> dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]:
    async def rules() -> dict[str, Any]:
        return rules_cost.run(iterations=args.rules_iterations)

    return {
        "rules_cost": rules,
        "rollback_cost": lambda: rollback_cost.run(repetitions=args.undo_repetitions),
        "detection": lambda: detection.run(runs=args.runs, interval=args.interval),
        "alert_push": lambda: alert_push.run(runs=args.alert_runs),
        "scale": lambda: scale.run(sizes=args.scale_sizes, idle_seconds=args.idle_seconds),
        "sim_scale": lambda: _sim_scale(args.sim_sizes),
        "analyses": lambda: analyses.run(counts=args.analyses, interval=args.analysis_interval,
                                         warmup_intervals=args.warmup_intervals,
                                         window_intervals=args.window_intervals),
        "mass_rollout": lambda: _mass(args),
    }


async def _mass(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for count in args.mass_counts:
        runs.append(await mass.run(count=count, interval=args.analysis_interval, spread=not args.mass_no_spread,
                                   batch=not args.mass_no_batch))
    return {"scenario": "mass_rollout", "runs": runs}


async def _sim_scale(sizes: list[int]) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rollguard-bench-sim-") as tmp:
        return await sim_scale.run(sizes=sizes, workdir=Path(tmp))


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def table(results: dict[str, Any]) -> str:
    """The human summary: one markdown row per figure."""
    rows: list[tuple[str, str, str, str, str]] = []
    r = results.get("rules_cost")
    if r and "error" not in r:
        for case, figures in r["cases"].items():
            rows.append(("rules_cost", f"µs per rule per evaluation ({case})", f"{figures['us_per_rule']:.1f}", "",
                         ""))
        rows.append(("rules_cost", "CEL program alone, µs", f"{r['cel_only_us']:.1f}", "", ""))
    r = results.get("rollback_cost")
    if r and "error" not in r:
        rows.append(("rollback_cost", "rollguard undo p50 / p95, ms",
                     f"{r['rollguard_undo_s']['p50'] * 1000:.1f} / {r['rollguard_undo_s']['p95'] * 1000:.1f}", "", ""))
        rows.append(("rollback_cost", "kubectl rollout undo p50 / p95, ms",
                     f"{r['kubectl_rollout_undo_s']['p50'] * 1000:.1f} / "
                     f"{r['kubectl_rollout_undo_s']['p95'] * 1000:.1f}", "", ""))
        rows.append(("rollback_cost", "kubectl / rollguard (p50)", f"{r['ratio_kubectl_over_rollguard_p50']}×", "",
                     ""))
    r = results.get("detection")
    if r and "error" not in r:
        p, c, iv = r["to_patch_s"], r["to_complete_s"], r["to_patch_intervals"]
        rows.append(("detection", f"bad sample → rollback PATCH p50 / p95, s (interval {r['interval_s']:g} s)",
                     f"{p['p50']:.2f} / {p['p95']:.2f} ({iv['p50']} / {iv['p95']} intervals)",
                     f"p95 ≤ {r['target_p95_s']:g}", _ok(r["meets_target"])))
        rows.append(("detection", "bad sample → rollout complete p50 / p95, s", f"{c['p50']:.2f} / {c['p95']:.2f}",
                     "", ""))
    r = results.get("alert_push")
    if r and "error" not in r:
        p = r["to_patch_s"]
        rows.append(("alert_push", f"webhook arrives → rollback PATCH p50 / p95 / max, s ({p['n']} runs)",
                     f"{p['p50']:.3f} / {p['p95']:.3f} / {p['max']:.3f}", f"p95 < {r['target_p95_s']:g}",
                     _ok(r["meets_target"])))
        w = r["apply_to_webhook_s"]
        rows.append(("alert_push", "bad deploy applied → first webhook p50 / p95, s",
                     f"{w['p50']:.2f} / {w['p95']:.2f}", "", ""))
    r = results.get("scale")
    if r and "error" not in r:
        t = r["targets"]
        for row in r["rows"]:
            n = row["deployments"]
            big = n >= t["deployments"]
            rss = f"{row['rss_mib']:.0f} ({row['peak_rss_mib']:.0f})"
            rows.append(("scale", f"{n:,} Deployments: RSS MiB (peak)", rss,
                         f"< {t['rss_mib']:g} at {t['deployments']:,}" if big else "",
                         _ok(row["rss_mib"] < t["rss_mib"]) if big else ""))
            rows.append(("scale", f"{n:,} Deployments: idle CPU % of a core", f"{row['idle_cpu_pct']:.2f}",
                         f"< {t['idle_cpu_pct']:g}" if big else "", _ok(row["idle_cpu_pct"] < t["idle_cpu_pct"])
                         if big else ""))
            rows.append(("scale", f"{n:,} Deployments: spawn → /readyz 200, s", f"{row['ready_s']:.2f}", "", ""))
    r = results.get("sim_scale")
    if r and "error" not in r:
        for row in r["rows"]:
            n = f"{row['deployments']:,}×{row['replicas']}"
            rows.append(("sim_scale", f"{n}: create + roll out, s / RSS MiB before → after",
                         f"{row['create_and_roll_out_s']:.1f} / "
                         f"{row['rss_before_mib']:.0f} → {row['rss_after_mib']:.0f}",
                         "", ""))
            rows.append(("sim_scale", f"{n}: LIST deployments / LIST {row['pods']:,} pods / watch initial, s",
                         f"{row['list_deployments_s']:.2f} / {row['list_pods_s']:.2f} / "
                         f"{row['watch_initial_events_s']:.2f}", "", ""))
    r = results.get("analyses")
    if r and "error" not in r:
        t = r["targets"]
        for stage in r["stages"]:
            n = stage["analyses"]
            big = n >= t["analyses"]
            rows.append(("analyses", f"{n:,} analyses @ {r['interval_s']:g} s: CPU % of a core",
                         f"{stage['cpu_pct']:.1f}",
                         f"< {t['cpu_pct']:g}" if big else "", _ok(stage["cpu_pct"] < t["cpu_pct"]) if big else ""))
            lag = stage["lag_s"]
            rows.append(("analyses", f"{n:,} analyses: lag p50 / p95, s", f"{lag['p50']:.3f} / {lag['p95']:.3f}",
                         f"p95 < {t['lag_p95_s']:g}" if big else "",
                         _ok((lag["p95"] or 0) < t["lag_p95_s"]) if big else ""))
            rows.append(("analyses", f"{n:,} analyses: Prometheus queries/s (uncoalesced)",
                         f"{stage['prom_qps']:.1f} ({stage['uncoalesced_qps']:.0f})", "", ""))
    r = results.get("mass_rollout")
    if r and "error" not in r:
        for run in r["runs"]:
            n, t, lag = run["analyses"], run["targets"], run["lag_s"]
            rows.append(("mass_rollout", f"{n:,} rollouts @ {run['interval_s']:g} s: lag p50 / p95 / max, s",
                         f"{lag['p50']} / {lag['p95']} / {lag['max']}", f"p95 < {t['lag_p95_s']:g}",
                         _ok((lag["p95"] if lag["p95"] is not None else 99) < t["lag_p95_s"])))
            own = run["daemon_lag"]
            rows.append(("mass_rollout", f"{n:,} rollouts: the daemon's lag histogram, share ≤ 0.5 s / ≤ 1 s "
                         f"({own['evaluations']:,} evaluations)",
                         f"{_share(own['within_0.5_s'])} / {_share(own['within_1_s'])}", "", ""))
            rows.append(("mass_rollout", f"{n:,} rollouts: missed ticks (analyses missing one; skipped by the daemon)",
                         f"{run['missed_ticks']} ({run['analyses_missing_a_tick']}; {run['ticks_skipped_by_daemon']})",
                         "0", _ok(run["missed_ticks"] == 0)))
            rows.append(("mass_rollout", f"{n:,} rollouts: daemon CPU % of a core / RSS MiB",
                         f"{run['cpu_pct']:.1f} / {run['rss_mib']:.0f}", f"< {t['cpu_pct']:g}",
                         _ok(run["cpu_pct"] < t["cpu_pct"])))
            rows.append(("mass_rollout", f"{n:,} rollouts: simulated cluster's process, CPU s until all "
                         "analysing / % of a core in the window",
                         f"{run['sim_cpu_s_to_all_analysing']:.1f} / {run['sim_cpu_pct']:.1f}", "", ""))
            rows.append(("mass_rollout", f"{n:,} rollouts: Prometheus queries/s ({run['shapes']} shapes; "
                         f"unbatched {run['uncoalesced_qps']:g})", f"{run['prom_qps']:.1f}",
                         f"≤ {t['prom_qps_max']}", _ok(run["prom_qps"] <= t["prom_qps_max"])))
    for name, r in results.items():
        if isinstance(r, dict) and "error" in r:
            rows.append((name, "FAILED", r["error"].splitlines()[0][:100], "", ""))
    header = ("scenario", "figure", "value", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def speed_line(machine: dict[str, Any]) -> str:
    """The host's speed readings before and after the scenarios, on one line (`bench.calibrate`)."""
    parts = []
    for when in ("before", "after"):
        speed = machine.get(f"speed_{when}") or {}
        if "error" in speed or not speed:
            parts.append(f"{when}: {speed.get('error', 'not taken')}")
        else:
            parts.append(f"{when}: loop {speed['python_loop_s']:.3f} s, decode {speed['json_decode_s']:.3f} s, "
                         f"decode kept {speed['json_decode_kept_s']:.3f} s")
    return "host speed (bench/calibrate.py, lower is faster) — " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.daemon is not None:
        if not args.daemon.is_file():
            print(f"bench: --daemon {args.daemon}: no such file", file=sys.stderr)
            return 2
        common.ROLLGUARD = args.daemon.absolute()
    with logging_to(sys.stderr, fmt="console", level="warning"):
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    command = shlex.join([".venv/bin/python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"command": command, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "daemon": str(common.ROLLGUARD), "results": {}}
    report["machine"]["speed_before"] = host_speed()
    jobs = _jobs(args)
    failed = False
    for name in SCENARIOS:
        if name not in args.only:
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = asyncio.run(jobs[name]())
        except Exception as exc:
            failed = True
            result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        report["results"][name] = result
        print(f"bench: {name} done in {result['elapsed_s']} s", file=sys.stderr, flush=True)
    report["machine"]["speed_after"] = host_speed()
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print("\n" + speed_line(report["machine"]) + "\n" + table(report["results"]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
