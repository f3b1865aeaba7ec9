"""`rollguard replay --rules DIR --prometheus-url URL [NS/NAME ...] [--since 14d] [--at TIME ...] [-o json]`.

Reads the cluster (Deployments, ReplicaSets, rollguard's state annotations) and Prometheus; writes
nothing anywhere but stdout and the `--html` file. Exit codes: 0 done, 1 a problem (invalid rules,
a Deployment that cannot be read), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.rollout_state import POD_TEMPLATE_HASH, RolloutId, epoch, owned_replica_sets
from daemon.kube.state import AnalysisState, StateError, read_state
from daemon.measurement import SignalContext
from daemon.replay.engine import Replay, Then, replay_rollout
from daemon.replay.history import PastRollout, as_revision, find_rollouts, revisions_of, unrecorded_rerolls
from daemon.replay.ksm import pruned_replica_sets, revision_first_seen
from daemon.replay.report import as_json, as_text
from daemon.rollout import Rollout, build_rollout
from daemon.rules.durations import DurationError, parse_duration
from daemon.rules.model import RollbackPolicy
from daemon.rulesets import RuleSet, RulesInvalid
from daemon.signals.promapi import PrometheusClient, PrometheusError

Obj = Mapping[str, Any]


DEFAULT_WINDOW = 365 * 86400.0
"""Seconds back kube-state-metrics series are looked up when no `--since` is given."""


class ReplayError(Exception):
    """Replay cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class Options:
    rules: Path
    prometheus_url: str
    targets: tuple[tuple[str, str], ...]
    since: float | None
    """Seconds before now; None: every rollout still recorded."""
    at: tuple[float, ...]
    kubeconfig: Path | None


def _target(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAMESPACE/DEPLOYMENT")
    return namespace, name


def _since(value: str) -> float:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(value: str) -> float:
    parsed = epoch(value)
    if parsed is None:
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a time (RFC 3339 such as 2026-11-30T21:00:00Z, "
                                             "or epoch seconds)") from None
    return parsed


def add_replay_command(sub: Any) -> None:
    """Register `rollguard replay` on the CLI's sub-parsers."""
    parser = sub.add_parser("replay", help="judge past rollouts with the rules, as the daemon would have")
    parser.add_argument("targets", nargs="*", metavar="NAMESPACE/DEPLOYMENT", type=_target,
                        help="Deployments to replay (default: every Deployment a policy selects)")
    parser.add_argument("--rules", metavar="DIR", required=True, help="directory of rule files")
    parser.add_argument("--prometheus-url", metavar="URL", required=True, help="Prometheus HTTP API base URL")
    parser.add_argument("--since", metavar="DURATION", type=_since, default=None,
                        help="only rollouts started this long ago or later, e.g. 14d (default: all recorded)")
    parser.add_argument("--at", metavar="TIME", type=_time, action="append", default=[],
                        help="a rollout started at TIME (RFC 3339 or epoch seconds), for starts the cluster "
                             "no longer records (repeatable)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--html", metavar="FILE", type=Path, help="also write an HTML report with a chart per signal")
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default=None,
                        help="log format on stderr (default auto)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="lowest level logged on stderr (default warning)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The handler of `rollguard replay`."""
    from daemon.logs import configure_logging
    from daemon.replay.html import render
    from daemon.settings import log_settings

    # The report is stdout; the analyses' own logs would drown it, so only their warnings show, on stderr.
    configure_logging(log_settings(fmt=args.log_format, level=args.log_level or "warning"), stream=sys.stderr)
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    options = Options(args.rules and Path(args.rules), args.prometheus_url, tuple(args.targets), args.since,
                      tuple(args.at), Path(kubeconfig))
    try:
        replays, notes = asyncio.run(replay(options))
    except RulesInvalid as exc:
        for error in exc.errors:
            print(f"rollguard replay: {error}", file=sys.stderr)
        return 1
    except ReplayError as exc:
        print(f"rollguard replay: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(as_json(replays, notes=notes), indent=2))
    else:
        sys.stdout.write(as_text(replays, notes=notes))
    if args.html is not None:
        args.html.write_text(render(replays, notes=notes), encoding="utf-8")
    return 0


async def replay(options: Options) -> tuple[list[Replay], list[str]]:
    """Every selected rollout replayed, oldest first per Deployment, and notes on what was skipped."""
    rules = RuleSet(options.rules)
    rules.load()
    try:
        kube = await KubeClient.connect(options.kubeconfig)
    except Exception as exc:  # the kubeconfig loader raises several unrelated types
        raise ReplayError(f"cannot load kubeconfig {options.kubeconfig}: {exc}") from exc
    now = time.time()
    replays: list[Replay] = []
    notes: list[str] = []
    async with kube, aiohttp.ClientSession() as session:
        prometheus = PrometheusClient(options.prometheus_url, session, timeout=30.0)
        try:
            await _replay_each(kube, session, prometheus, rules, options, now=now, replays=replays, notes=notes)
        finally:
            await prometheus.aclose()
    return replays, notes


async def _replay_each(kube: KubeClient, session: aiohttp.ClientSession, prometheus: PrometheusClient,
                       rules: RuleSet, options: Options, *, now: float, replays: list[Replay],
                       notes: list[str]) -> None:
    """Replay every selected Deployment's rollouts into `replays`, oldest first per Deployment."""
    since = None if options.since is None else now - options.since
    for deployment in await _deployments(kube, options.targets):
        meta = deployment.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        policy = rules.policy_for(namespace, meta.get("labels") or {})
        if policy is None:
            notes.append(f"{namespace}/{name}: no policy selects it")
            continue
        try:
            listed = await kube.list(api_path("apps/v1", "replicasets", namespace))
        except KubeError as exc:
            raise ReplayError(f"cannot read the ReplicaSets of {namespace}/{name}: {exc}") from exc
        replica_sets = owned_replica_sets(deployment, list(listed.get("items") or []))
        replica_sets += await _pruned(prometheus, deployment, replica_sets, window=options.since or DEFAULT_WINDOW,
                                      now=now, notes=notes)
        states = _states(deployment, replica_sets, now)
        passed = list({(p.hash, p.revision): p for s in states for p in s.passed}.values())
        rerolled = await _rerolled(prometheus, namespace, unrecorded_rerolls(replica_sets, states),
                                   window=options.since or DEFAULT_WINDOW, now=now, notes=notes)
        past, skipped = find_rollouts(deployment, replica_sets, states=states, rerolled=rerolled, at=options.at,
                                      since=since, until=now)
        notes.extend(skipped)
        for rollout in past:
            if rollout.undo_of is not None:
                notes.append(f"{namespace}/{name} revision {rollout.revision}: rollguard's own rollback of "
                             f"revision {rollout.undo_of}, not judged (the daemon does not judge its own undo)")
                continue
            built, earlier = _rollout(deployment, replica_sets, rollout, policy)
            replays.append(await replay_rollout(built, prometheus_url=options.prometheus_url, kube=kube,
                                                session=session, ended_at=rollout.ended_at, now=now,
                                                completed_at=rollout.completed_at, failed_at=rollout.failed_at,
                                                source=rollout.source, then=Then(earlier, passed)))


async def _pruned(prometheus: PrometheusClient, deployment: Obj, live: Sequence[Obj], *, window: float, now: float,
                  notes: list[str]) -> list[Obj]:
    """Records of the Deployment's ReplicaSets that are gone, from kube-state-metrics (a note when unreadable)."""
    meta = deployment.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    try:
        records = await pruned_replica_sets(prometheus, namespace=namespace, deployment=name,
                                            uid=str(meta.get("uid", "")), window=window, now=now)
    except PrometheusError as exc:
        notes.append(f"{namespace}/{name}: kube-state-metrics series could not be read, so pruned ReplicaSets are "
                     f"not looked up: {exc}")
        return []
    present = {(rs.get("metadata") or {}).get("name") for rs in live}
    return [r for r in records if r["metadata"]["name"] not in present]


async def _rerolled(prometheus: PrometheusClient, namespace: str, wanted: Sequence[tuple[str, int]], *,
                    window: float, now: float, notes: list[str]) -> dict[tuple[str, int], float]:
    """(ReplicaSet, revision) → when kube-state-metrics first exported it so, for each of `wanted` it tells."""
    found = {}
    for name, revision in wanted:
        try:
            start = await revision_first_seen(prometheus, namespace=namespace, replica_set=name, revision=revision,
                                              window=window, now=now)
        except PrometheusError as exc:
            notes.append(f"{namespace}/{name}: kube-state-metrics could not tell when it became revision {revision}: "
                         f"{exc}")
            continue
        if start is not None:
            found[name, revision] = start
    return found


async def _deployments(kube: KubeClient, targets: Sequence[tuple[str, str]]) -> list[Obj]:
    try:
        if targets:
            return [await kube.get(api_path("apps/v1", "deployments", ns, name)) for ns, name in targets]
        listed = await kube.list(api_path("apps/v1", "deployments"))
    except KubeError as exc:
        raise ReplayError(f"cannot read the Deployments: {exc}") from exc
    return list(listed.get("items") or [])


def _states(deployment: Obj, replica_sets: Sequence[Obj], now: float) -> list[AnalysisState]:
    """rollguard's persisted states: the Deployment's and the copies on its ReplicaSets (unreadable ones skipped)."""
    states = []
    for obj in (deployment, *replica_sets):
        try:
            states.append(read_state(obj, now=now))
        except StateError:
            continue
    return states


def _rollout(deployment: Obj, replica_sets: Sequence[Obj], past: PastRollout,
             policy: RollbackPolicy) -> tuple[Rollout, list[Obj]]:
    """The `Rollout` the daemon would have built when `past` started (its template), and the ReplicaSets up to
    it as they were then."""
    identity = RolloutId(past.namespace, past.deployment, past.revision, past.pod_template_hash)
    if past.replica_set is None:
        ctx = SignalContext(namespace=past.namespace, deployment=past.deployment, revision=past.revision,
                            pod_template_hash=past.pod_template_hash,
                            pod_prefix=f"{past.deployment}-{past.pod_template_hash}-", labels={},
                            rollout_started_at=past.started_at)
        return Rollout(identity, policy, ctx, None, past.started_at), []
    template = (past.replica_set.get("spec") or {}).get("template") or {}
    then = {**deployment, "spec": {**(deployment.get("spec") or {}), "template": template}}
    # Each ReplicaSet as it was then: an undo has since renumbered a re-used one.
    earlier = [as_revision(rs, max(before)) for rs in replica_sets
               if (before := [r for r in revisions_of(rs) if r <= past.revision])]
    rollout = build_rollout(then, earlier, identity, policy, past.started_at)
    labels = ((template.get("metadata") or {}).get("labels") or {})
    assert labels.get(POD_TEMPLATE_HASH, past.pod_template_hash) == past.pod_template_hash
    return rollout, earlier
