"""Play one schedule against the chaos stack, let it settle, and collect what an outsider can see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.faults import ConcurrentWrite, FaultRule
from sim.resources import DEPLOYMENTS
from tests.chaos.checker import DeployRecord, Observation, Violation, check, unfinished_analyses
from tests.chaos.schedule import Fault, Schedule, Step, env_for
from tests.chaos.stack import LEASE_SECONDS, SECRETS, ChaosStack, chaos_stack

VERDICT_WAIT = 20.0
"""Seconds a `hold: until verdict` step waits for its revision's decision at most."""
SETTLE_QUIET = 3.0
SETTLE_MAX = 45.0
DECIDED = ("AnalysisPassed", "RolledBack", "RollbackFailed", "ReviewRequested", "RollbackDryRun",
           "RollbackSkipped", "RollbackJobFailed", "RollbackFenced", "Superseded")


@dataclass
class RunResult:
    schedule: Schedule
    variant: str
    seconds: float
    injected: Counter[str]
    violations: list[Violation]
    observation: Observation
    notes: list[str] = field(default_factory=list)


def _daemon_events(stack: ChaosStack) -> list[tuple[float, str, str]]:
    """(time, reason, message) of every Event the daemon created, from the audit log."""
    import json

    users = {r.user for r in stack.replicas}
    found = []
    for record in stack.cluster.audit:
        if record.resource == "events" and record.verb == "create" and record.user in users and record.code < 300:
            with contextlib.suppress(ValueError):
                body = json.loads(record.body)
                found.append((record.at, str(body.get("reason", "")), str(body.get("message") or body.get("note", ""))))
    return found


def _revision_now(stack: ChaosStack) -> int:
    obj = stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend")
    if obj is None:
        return 0
    return int((obj["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))


def _image_now(stack: ChaosStack) -> str:
    obj = stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend")
    containers = ((((obj or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return str(containers[0].get("image", "")) if containers else ""


async def _wait(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


class Player:
    """Applies a schedule's faults at their moments; keeps track of what it injected."""

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.tasks: list[asyncio.Task[None]] = []
        self.injected: Counter[str] = Counter()

    def later(self, delay: float, action: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await action()
        self.tasks.append(asyncio.create_task(run()))

    def kill(self, target: Any, restart: float) -> None:
        if target is None or not target.running:
            return
        target.kill()
        self.tasks.append(asyncio.create_task(self.stack.restart_later(target, restart)))

    def arm(self, step: Step, fault: Fault) -> None:
        stack, faults = self.stack, self.stack.faults
        p = fault.params
        self.injected[fault.kind] += 1
        if fault.kind in ("api-error", "api-latency", "api-stall", "watch-410"):
            rule = FaultRule(verb="watch" if fault.kind == "watch-410" else p.get("verb", "*"),
                             resource=p.get("resource", "*"), code=410 if fault.kind == "watch-410" else
                             (0 if fault.kind in ("api-latency", "api-stall") else int(p["code"])),
                             retry_after=p.get("retryAfter"), latency=float(p.get("latency", 0.0)),
                             stall=fault.kind == "api-stall", count=int(p.get("count", 1)),
                             user="rollguard-*")  # the daemons' requests; the harness's deploys go through

            async def add() -> None:
                faults.add(rule)
                if fault.kind == "api-stall":
                    await asyncio.sleep(float(p["release"]))
                    faults.release_stalls()
            self.later(fault.at, add)
        elif fault.kind == "cut-watches":
            self.later(fault.at, _async(faults.cut_watches))
        elif fault.kind == "compact":
            def compact_and_cut() -> None:
                faults.compact()
                faults.cut_watches()
            self.later(fault.at, _async(compact_and_cut))
        elif fault.kind == "concurrent-annotate":
            faults.before_patch.append(ConcurrentWrite("annotate", "staging", "backend", key="team", value="chaos"))
        elif fault.kind == "kill-at-write":
            target = stack.leader() or stack.replicas[0]
            from sim.faults import AfterWrite

            index = faults.writes_by_user[target.user] + int(p["write"])
            faults.after_write.append(AfterWrite(target.user, index, lambda: self.kill(target, float(p["restart"]))))
        elif fault.kind in ("kill-at", "kill-leader"):
            async def kill() -> None:
                target = stack.leader() if fault.kind == "kill-leader" else (stack.leader() or stack.replicas[0])
                self.kill(target, float(p["restart"]))
            self.later(fault.at, kill)
        elif fault.kind == "prometheus-down":
            prometheus = stack.cluster.prometheus
            assert prometheus is not None

            async def down() -> None:
                await prometheus.stop()
                await asyncio.sleep(float(p["for"]))
                await prometheus.start()
            self.later(fault.at, down)
        elif fault.kind == "slack-fail":
            self.later(fault.at, _async(lambda: stack.slack.fail_next(
                int(p["count"]), status=int(p["status"]), retry_after=1 if p["status"] == 429 else None)))
        elif fault.kind == "pagerduty-fail":
            self.later(fault.at, _async(lambda: stack.pagerduty.fail_next(int(p["count"]), status=int(p["status"]))))
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def finish(self) -> None:
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)


def _async(fn: Any) -> Any:
    async def call() -> None:
        fn()
    return call


async def play(schedule: Schedule, workdir: Path, *, variant: str = "none") -> RunResult:
    started = time.monotonic()
    async with chaos_stack(workdir, variant=variant, dry_run=schedule.dry_run, replicas=schedule.replicas) as stack:
        await stack.setup_namespace()
        for replica in stack.replicas:
            await stack.start(replica)
        player = Player(stack)
        deploys: list[DeployRecord] = []
        for i, step in enumerate(schedule.steps):
            if step.kind == "reapply":
                # Re-applying the live template is no rollout at all: when the previous step's rollback
                # is late (a kill, a held rule), wait for it, or the next revision the harness sees —
                # rollguard's own undo — would be taken for the re-apply.
                await _wait(lambda s=step: _image_now(stack) != s.image, VERDICT_WAIT)
            before = _revision_now(stack)
            if step.kind == "errors+newer":
                newer = f"{step.image}-newer"
                stack.faults.before_patch.append(ConcurrentWrite("deploy", "staging", "backend", value=newer,
                                                                 env=env_for("healthy")))
            for fault in step.faults:
                player.arm(step, fault)
            await _wait_for_traffic(stack)
            applied_at = time.time()
            await stack.deploy(step.image, step.env)
            await _wait(lambda b=before: _revision_now(stack) > b, 10)
            seen = stack.timeline[-1] if stack.timeline else None
            deploys.append(DeployRecord(i, step.kind, step.image, step.intent, applied_at,
                                        seen.revision if seen else 0, seen.template_hash if seen else ""))
            if step.hold is not None:
                await asyncio.sleep(step.hold)
                continue
            revision = deploys[-1].revision
            await _wait(lambda r=revision, t=applied_at: _decided(stack, r, t), VERDICT_WAIT)
            if any(reason == "RolledBack" for at, reason, _ in _daemon_events(stack) if at >= applied_at):
                await _wait(lambda t=applied_at: any(reason == "RollbackCompleted" for at, reason, _
                                                     in _daemon_events(stack) if at >= t), 15)
        await player.finish()

        async def in_progress() -> bool:
            seen = await observe(stack, schedule, _with_newer(stack, deploys))
            return bool(unfinished_analyses(seen)) or _retry_due(seen.logs)

        await settle(stack, in_progress)
        observation = await observe(stack, schedule, _with_newer(stack, deploys))
    injected = player.injected + Counter({f"sim:{k}": v for k, v in stack.faults.injected.items()})
    return RunResult(schedule, variant, time.monotonic() - started, injected, check(observation), observation)


async def _wait_for_traffic(stack: ChaosStack, timeout: float = 10.0) -> None:
    """Until Prometheus has had a request rate for 3 pods for a few seconds: what a `baseline: previous`
    query at the next rollout's start needs (as an SRE deploys onto a service that has been serving)."""
    assert stack.session is not None
    query = 'count(count by (pod) (rate(http_requests_total{namespace="staging"}[5s] offset 3s) > 0))'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            async with stack.session.get(f"{stack.cluster.prometheus_url}/api/v1/query",
                                         params={"query": query}) as resp:
                result = (await resp.json())["data"]["result"]
                if result and float(result[0]["value"][1]) >= 3:
                    return
        await asyncio.sleep(0.25)


def _decided(stack: ChaosStack, revision: int, since: float) -> bool:
    for at, reason, message in _daemon_events(stack):
        if at < since or reason not in DECIDED:
            continue
        if f"revision {revision}" in message or reason in ("RollbackFailed", "RollbackSkipped"):
            return True
    return False


def _retry_due(logs: str) -> bool:
    """Whether a daemon logged a notification retry that is not due yet (its backoff can outlast the
    quiet period: an alert still on its way is not an alert lost)."""
    now = time.time()
    for line in logs.splitlines():
        if '"notification failed; retrying"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            at = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()
            if at + float(record["retry_in"]) + 1.0 > now:
                return True
    return False


def _with_newer(stack: ChaosStack, deploys: list[DeployRecord]) -> list[DeployRecord]:
    """`deploys` and the concurrent writer's deploys: healthy, never to be undone."""
    out = list(deploys)
    for seen in stack.timeline:
        if seen.image.endswith("-newer") and not any(d.template_hash == seen.template_hash for d in out):
            revision = max(s.revision for s in stack.timeline if s.template_hash == seen.template_hash)
            out.append(DeployRecord(-1, "newer", seen.image, "healthy", seen.at, revision, seen.template_hash))
    return out


async def settle(stack: ChaosStack, in_progress: Callable[[], Awaitable[bool]]) -> None:
    """Clear the API faults, bring every daemon and Prometheus back, and wait until nothing happens:
    no write for `SETTLE_QUIET` seconds and no analysis in progress (an analysis in its initial delay
    or bake time writes nothing for longer than that). At most `SETTLE_MAX` seconds: an analysis
    still open then is one that will never announce a verdict, which the checker reports (I1)."""
    stack.faults.clear()
    prometheus = stack.cluster.prometheus
    if prometheus is not None:
        with contextlib.suppress(Exception):
            await prometheus.start()
    for replica in stack.replicas:
        if not replica.running:
            await stack.start(replica)
    users = {r.user for r in stack.replicas}
    deadline = time.monotonic() + SETTLE_MAX

    def last_activity() -> float:
        writes = [r.at for r in stack.cluster.audit if r.user in users and r.verb not in ("get", "list", "watch")
                  and r.resource != "leases"]
        received = [r.at for r in (*stack.slack.received, *stack.pagerduty.received)]
        return max([0.0, *writes, *received])

    while time.monotonic() < deadline:
        if time.time() - last_activity() >= SETTLE_QUIET and not await in_progress():
            return
        await asyncio.sleep(0.5)


async def observe(stack: ChaosStack, schedule: Schedule, deploys: list[DeployRecord]) -> Observation:
    deployment = stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}
    analyses = await stack.analyses()
    logs = "\n".join(r.log_path.read_text(errors="replace") for r in stack.replicas if r.log_path.exists())
    slack = [{"text": m.text, "blocks": m.blocks, "history": m.history} for m in stack.slack.messages.values()]
    slack_roots = [m.text for m in stack.slack.roots()]
    return Observation(
        audit=list(stack.cluster.audit), users=tuple(r.user for r in stack.replicas),
        identities={r.user: r.identity for r in stack.replicas}, deploys=deploys, timeline=list(stack.timeline),
        deployment=deployment, slack=slack, slack_roots=slack_roots, pagerduty=list(stack.pagerduty.events),
        logs=logs, analyses=analyses, dry_run=schedule.dry_run, leader_election=schedule.replicas > 1,
        lease_seconds=LEASE_SECONDS, secrets=SECRETS)


def run(schedule: Schedule, *, variant: str = "none", keep: Path | None = None) -> RunResult:
    """Play `schedule` in a fresh temporary directory (or `keep`) and check it."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(play(schedule, keep, variant=variant))
    with tempfile.TemporaryDirectory(prefix=f"chaos-{schedule.seed}-") as tmp:
        return asyncio.run(play(schedule, Path(tmp), variant=variant))
