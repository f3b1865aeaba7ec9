"""The command line of the chaos runs (`python -m tests.chaos`, `make chaos`) and its summary table."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tests.chaos.checker import Observation
from tests.chaos.launcher import VARIANTS
from tests.chaos.schedule import Schedule, generate, kill_point_schedule


@dataclass
class Summary:
    """What one run leaves for the table (picklable, small)."""

    label: str
    seconds: float
    injected: dict[str, int]
    violations: list[str]
    invariants: list[str]
    schedule: str
    write_points: list[str] = field(default_factory=list)


def write_points(obs: Observation, since: float) -> list[str]:
    """The daemon's writes (leases aside) from `since` on, in order: the kill points of a rollback."""
    points = []
    for r in obs.audit:
        if r.user in obs.users and r.verb not in ("get", "list", "watch") and r.resource != "leases" \
                and r.at >= since and r.code < 400:
            what = f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}"
            body = json.loads(r.body) if r.body.startswith(("{", "[")) else {}
            if r.resource == "events" and isinstance(body, dict):
                what += f" ({body.get('reason')})"
            elif r.resource == "deployments" and isinstance(body, list):
                what += " (undo)"
            elif r.resource == "deployments":
                what += " (state annotation)"
            points.append(what)
    return points


def run_one(schedule: Schedule, variant: str, label: str) -> Summary:
    from tests.chaos.runner import run

    result = run(schedule, variant=variant)
    points: list[str] = []
    if len(result.observation.deploys) > 1:
        points = write_points(result.observation, result.observation.deploys[1].at)
    return Summary(label, result.seconds, dict(result.injected), [v.describe() for v in result.violations],
                   [v.invariant for v in result.violations], schedule.describe(), points)


SIDE_BY_SIDE = 4
"""Schedules played at once. A schedule mostly waits on its policy's timers (about 15% of a core for
the daemon, the API server and the workload together), so four fit on a 2-core machine."""


def run_many(jobs: list[tuple[Schedule, str, str]], workers: int, *, verbose: bool) -> list[Summary]:
    summaries: list[Summary] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, schedule, variant, label) for schedule, variant, label in jobs]
        for future, (schedule, _, label) in zip(futures, jobs, strict=True):
            try:
                summary = future.result()
            except Exception as exc:  # a harness failure is reported, and the other schedules still run
                summary = Summary(label, 0.0, {}, [f"harness: the run failed: {exc!r}"], ["harness"],
                                  schedule.describe())
            summaries.append(summary)
            status = "ok" if not summary.violations else f"VIOLATED {','.join(sorted(set(summary.invariants)))}"
            print(f"{summary.label:<28} {summary.seconds:6.1f}s  {status}", flush=True)
            if summary.violations or verbose:
                print(summary.schedule)
                for line in summary.violations:
                    print("  " + line.replace("\n", "\n  "))
    return summaries


def table(summaries: list[Summary], wall: float, command: str) -> str:
    injected: Counter[str] = Counter()
    violated: Counter[str] = Counter()
    for s in summaries:
        injected.update(s.injected)
        violated.update(s.invariants)
    seconds = [s.seconds for s in summaries] or [0.0]
    lines = [f"command: {command}", f"machine: {platform.node()} {platform.machine()} "
             f"({platform.python_implementation()} {platform.python_version()}); date: "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"schedules run: {len(summaries)}   failing schedules: {sum(1 for s in summaries if s.violations)}",
             f"seconds per schedule: mean {sum(seconds) / len(seconds):.1f}, max {max(seconds):.1f}; "
             f"wall clock {wall:.0f}s",
             "", "faults injected            count"]
    lines += [f"  {kind:<26} {n:>6}" for kind, n in sorted(injected.items())]
    lines += ["", "invariant violations       count"]
    lines += [f"  {inv:<26} {violated.get(inv, 0):>6}" for inv in ("I1", "I2", "I3", "I4", "I5", "I6", "I7")]
    lines.append(f"  {'total':<26} {sum(violated.values()):>6}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--seed", type=int, help="run this one seed (prints its schedule)")
    parser.add_argument("--seeds", type=int, default=0, help="run seeds FIRST..FIRST+N-1")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=SIDE_BY_SIDE, help="schedules side by side")
    parser.add_argument("--kill-points", action="store_true",
                        help="SIGKILL the daemon after each of its writes in one rollback "
                             "(enumerated from a clean run's audit log)")
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    parser.add_argument("--show", action="store_true", help="print only the schedule(s), run nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    if args.show:
        for seed in seeds:
            print(generate(seed).describe())
        return 0
    started = time.monotonic()
    jobs = [(generate(seed), args.variant, f"seed {seed}") for seed in seeds]
    summaries = run_many(jobs, args.jobs, verbose=args.verbose or len(jobs) == 1)
    if args.kill_points:
        clean = run_many([(kill_point_schedule(0), args.variant, "kill points: clean run")], 1, verbose=False)[0]
        print("write points of the rollback (from the audit log of the clean run):")
        for i, point in enumerate(clean.write_points, 1):
            print(f"  {i}. {point}")
        kills = [(kill_point_schedule(i), args.variant, f"kill at write {i}: {p}"[:28])
                 for i, p in enumerate(clean.write_points, 1)]
        summaries += [clean, *run_many(kills, args.jobs, verbose=args.verbose)]
    print()
    command = "python -m tests.chaos " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    print(table(summaries, time.monotonic() - started, command))
    return 1 if any(s.violations for s in summaries) else 0
