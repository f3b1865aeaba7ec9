"""`rollguard demo`: the runbook's rollback story, played on the built-in simulated cluster.

It starts the simulated cluster, a real Prometheus scraping it, local Slack and PagerDuty
receivers and `rollguard run` with the example policy from `rules/`, then deploys a `backend`
Deployment in `staging` six times, each an ordinary template change an SRE might make:

1. v1 and 2. v2, healthy                      → started / complete / passed (Slack)
3. v3 with 12% 5xx responses                  → rolled back automatically (Slack + PagerDuty)
4. v4, 80% slower than its predecessor        → review paged; the demo approves like an SRE
                                                (`rollguard approve`) and the rollback follows
5. v5 with occasional error lines in its logs → Slack notify only, no rollback
6. v6 that never becomes ready                → progress deadline exceeded → failure alert and,
                                                as the policy says, rollback
7. v7, 500 ms per request                     → the team's own Prometheus alert, pushed by Alertmanager,
                                                rolls it back (when Alertmanager is installed)
8. v8 from Git, Argo CD owning it (`gitops_step`) → sync suspended, rolled back, `rollguard resume`

The example policy's durations are production-sized (minutes); the demo runs the same rules with
shorter timings (see `demo_timing`) so the story fits in about three minutes (`--fast`: less).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from daemon.logs import configure_logging
from daemon.settings import LogSettings
from sim.demo import team_alerts
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.script import FAST, HEALTHY, NORMAL, REPO_RULES, Step, Timing, alert_step, demo_timing, steps
from sim.demo.stack import Stack, running_stack
from sim.demo.timeline import EvaluationLines
from sim.resources import DEPLOYMENTS, EVENTS, REPLICASETS
from sim.store import WatchEvent


class Timeline:
    """Readable, timestamped lines about what happens, as it happens."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()

    def say(self, who: str, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.start:6.1f}s] {who:<10} {text}\n")
        self.out.flush()


class Demo:
    """Plays the steps against a running stack and narrates."""

    def __init__(self, stack: Stack, timeline: Timeline, timing: Timing) -> None:
        self.stack = stack
        self.t = timeline
        self.timing = timing
        self._last_status: str = ""
        self._seen_events: set[str] = set()
        self._evaluations = EvaluationLines()
        self.steps: list[Step] = []

    # ----- watching the cluster -----

    def on_change(self, event: WatchEvent) -> None:
        obj = event.obj
        meta = obj.get("metadata") or {}
        if event.bucket == DEPLOYMENTS.bucket and meta.get("name") == "backend":
            status = obj.get("status") or {}
            spec = obj.get("spec") or {}
            revision = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
            if revision is None or int(status.get("observedGeneration", 0)) < int(meta.get("generation", 1)):
                return  # the controller has not caught up with the new template yet
            image = spec["template"]["spec"]["containers"][0]["image"]
            replicas = spec.get("replicas", 0)
            updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
            complete = updated == replicas == available == status.get("replicas", 0)
            # One line per step of the rollout, not per pod flicker.
            key = f"{revision}/{image}/{updated}/{complete}"
            if key != self._last_status:
                self._last_status = key
                state = "complete" if complete else f"{updated}/{replicas} updated, {available} available"
                self.t.say("cluster", f"rev {revision} {image}: {state}")
        elif event.bucket == EVENTS.bucket and (obj.get("source") or {}).get("component") == "rollguard":
            key = meta.get("name", "")
            if key not in self._seen_events and event.type == "ADDED":
                self._seen_events.add(key)
                self.t.say("rollguard", f"{obj.get('reason')}: {obj.get('message')}")

    async def watch_analyses(self) -> None:
        """Print each evaluation's key values and rule timers from the daemon's /api/v2/analyses (once each)."""
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(1)
                try:
                    async with session.get(self.stack.daemon_url + "/api/v2/analyses") as response:
                        body = await response.json()
                except (aiohttp.ClientError, ValueError):
                    continue
                line = self._evaluations.line(body)
                if line is not None:
                    self.t.say("analysis", line)

    # ----- the story -----

    def image(self) -> str:
        obj = self.stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}
        return str(obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image"))

    def state(self) -> dict[str, Any]:
        obj = self.stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}
        raw = (obj.get("metadata") or {}).get("annotations", {}).get("rollguard.io/state")
        return json.loads(raw) if raw else {}

    async def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.t.say("demo", f"gave up waiting for {what} after {timeout:g}s")
                return False
            await asyncio.sleep(0.2)
        return True

    async def deploy(self, step: Step) -> None:
        self.t.say("sre", f"kubectl apply  backend {step.image}  ({step.title})")
        await self.stack.apply(backend_deployment(step.image, env={**HEALTHY, **step.env},
                                                  progress_deadline=step.progress_deadline,
                                                  change_cause=f"{step.image}: {step.title}"))

    def phase(self) -> str:
        """The current revision's lifecycle stage ("" while the state still describes an older one)."""
        state = self.state()
        if (state.get("rollout") or {}).get("revision") != self.revision():
            return ""
        return str(state.get("phase", ""))

    def revision(self) -> int:
        obj = self.stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}
        return int((obj.get("metadata") or {}).get("annotations", {}).get("deployment.kubernetes.io/revision", 0))

    async def watch_bad_sample(self, step: Step) -> None:
        """When did Prometheus first show the new pods' error ratio above 5%? (for the summary)"""
        pod_template_hash = self.new_hash()
        selector = f'namespace="staging",pod_template_hash="{pod_template_hash}"'
        query = (f'sum(rate(http_requests_total{{{selector},code=~"5.."}}[1m]))'
                 f' / sum(rate(http_requests_total{{{selector}}}[1m]))')
        async with aiohttp.ClientSession() as session:
            while step.bad_sample_at is None:
                try:
                    async with session.get(f"{self.stack.cluster.prometheus_url}/api/v1/query",
                                           params={"query": query}) as response:
                        result = (await response.json())["data"]["result"]
                    if result and float(result[0]["value"][1]) > 0.05:
                        step.bad_sample_at = time.monotonic()
                except (aiohttp.ClientError, KeyError, ValueError):
                    pass
                await asyncio.sleep(0.25)

    def new_hash(self) -> str:
        """The pod-template-hash of the ReplicaSet of the Deployment's current revision."""
        revision = str(self.revision())
        for rs in self.stack.cluster.store.iter_objects(REPLICASETS):
            meta = rs.get("metadata") or {}
            owners = [ref.get("name") for ref in meta.get("ownerReferences") or []]
            if "backend" in owners and (meta.get("annotations") or {}).get(
                    "deployment.kubernetes.io/revision") == revision:
                return str((meta.get("labels") or {}).get("pod-template-hash", ""))
        return ""

    async def run_step(self, step: Step) -> None:
        self.steps.append(step)
        before = self.image()
        revision_before = self.revision()
        await self.deploy(step)
        await self.wait_for("the new revision", lambda: self.revision() > revision_before, 30)
        await self.wait_for("its ReplicaSet", lambda: bool(self.new_hash()), 30)
        sampler = asyncio.create_task(self.watch_bad_sample(step)) if "12%" in step.title else None
        bake = self.timing.initial_delay + self.timing.bake_time + 60
        try:
            if step.expect == "passed":
                ok = await self.wait_for("the analysis to pass", lambda: self.phase() == "passed", bake)
                step.verdict = "passed" if ok else f"? ({self.phase()})"
            elif step.expect == "rolled back":
                ok = await self.wait_for("the rollback", lambda: self.image() == before, 120)
                step.rolled_back_at = time.monotonic()
                step.verdict = "rolled back" if ok else f"? ({self.phase()})"
            elif step.expect == "review":
                ok = await self.wait_for("the review page", lambda: self.phase() == "review", 120)
                if ok:
                    await asyncio.sleep(2)
                    self.t.say("sre", f"the PagerDuty page says: rollguard approve staging/backend --revision "
                                      f"{self.revision()} — running it")
                    out = await self._approve()
                    self.t.say("sre", out.strip())
                    ok = await self.wait_for("the approved rollback", lambda: self.image() == before, 60)
                    step.rolled_back_at = time.monotonic()
                step.verdict = "review → approved → rolled back" if ok else f"? ({self.phase()})"
            elif step.expect == "notify":
                ok = await self.wait_for("the analysis to end", lambda: self.phase() == "passed", bake)
                notified = "minor-errors" in json.dumps(self.state().get("decision") or {})
                step.verdict = ("notified, not rolled back" if ok and notified and self.image() == step.image
                                else f"? ({self.phase()})")
            elif step.expect == "alert":
                ok = await self.wait_for("the rollback on the team's alert", lambda: self.image() == before, 60)
                step.verdict = team_alerts.verdict(self.state(), rolled_back=ok)
            elif step.expect == "failed":
                ok = await self.wait_for("the rollback after the failure", lambda: self.image() == before,
                                         step.progress_deadline + 60)
                step.rolled_back_at = time.monotonic()
                step.verdict = "failed → rolled back" if ok else f"? ({self.phase()})"
            await self.wait_for("the rollout to settle", self._settled, 60)
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

    def _settled(self) -> bool:
        obj = self.stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}
        status = obj.get("status") or {}
        replicas = (obj.get("spec") or {}).get("replicas", 0)
        return bool(status.get("updatedReplicas") == replicas == status.get("availableReplicas")
                    == status.get("replicas"))

    async def _approve(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "approve", "staging/backend", "--revision", str(self.revision()),
            "--by", "demo-sre", "--kubeconfig",
            str(self.stack.cluster.kubeconfig), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return out.decode()


def print_report(demo: Demo, out: TextIO, history: str) -> None:
    stack = demo.stack
    out.write("\n=== Slack (#deploys), as received ===\n")
    for message in sorted(stack.slack.messages.values(), key=lambda m: m.ts):
        prefix = "    ↳ " if message.thread_ts else "• "
        out.write(f"{prefix}{message.text}\n")
    out.write("\n=== PagerDuty events, as received ===\n")
    for event in stack.pagerduty.events:
        payload = event.get("payload") or {}
        summary = payload.get("summary", "")[:110] if payload else "(incident resolved)"
        out.write(f"• {event.get('event_action'):8} {payload.get('severity', ''):8} {event.get('dedup_key')}: "
                  f"{summary}\n")
    out.write("\n=== kubectl rollout history deployment/backend -n staging ===\n")
    out.write(history)
    out.write("\n=== Summary ===\n")
    out.write(f"{'image':<24}  {'what changed':<36}  {'verdict':<32}  bad sample → rollback\n")
    for step in demo.steps:
        delay = "—"
        if step.bad_sample_at is not None and step.rolled_back_at is not None:
            delay = f"{step.rolled_back_at - step.bad_sample_at:.1f}s"
        what = step.title.split(", ", 1)[-1]
        out.write(f"{step.image:<24}  {what:<36.36}  {step.verdict:<32}  {delay}\n")


async def play(*, fast: bool, keep_running: bool, out: TextIO, workdir: Path) -> int:
    timing = FAST if fast else NORMAL
    rules_dir = workdir / "rules"
    changes = demo_timing(REPO_RULES, rules_dir, timing)
    alerting = team_alerts.available()
    if alerting:
        team_alerts.add_to_policies(rules_dir)
    from sim.demo.gitops_step import GITOPS_LIMITS, VERDICT as GITOPS_VERDICT, play_gitops_step, use_suspend

    changes.append(use_suspend(rules_dir))
    timeline = Timeline(out)
    out.write("rollguard demo: a simulated cluster, a real Prometheus, local Slack and PagerDuty, and the daemon\n")
    out.write(f"rules: {REPO_RULES}/*.yaml with demo timings (initialDelay {timing.initial_delay:g}s, "
              f"interval {timing.interval:g}s, bakeTime {timing.bake_time:g}s; {'; '.join(changes)})\n")
    out.write(f"team alerts: {team_alerts.describe() if alerting else 'Alertmanager is not installed: step 7 skipped'}"
              "\n\n")
    log_path = workdir / "rollguard.log"
    with log_path.open("w") as log_file:
        configure_logging(LogSettings(format="json", level="info"), stream=log_file)
        async with running_stack(workdir=workdir, rules_dir=rules_dir, start_daemon=False,
                                 actions=GITOPS_LIMITS) as stack, team_alerts.team_alerting(stack, enabled=alerting):
            await stack.start_daemon()
            demo = Demo(stack, timeline, timing)
            stack.cluster.store.add_listener(demo.on_change)
            watcher = asyncio.create_task(demo.watch_analyses(), name="demo-analyses")
            try:
                await stack.apply(backend_service())
                for step in [*steps(timing), *([alert_step()] if alerting else [])]:
                    await demo.run_step(step)
                    if (error := stack.daemon_failed()) is not None:
                        raise RuntimeError(f"the daemon stopped: {error!r}")
                await play_gitops_step(demo)
                await asyncio.sleep(2)  # let the last notifications land
                history = await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")
                print_report(demo, out, history)
                out.write(f"\nThe daemon's own log (JSON lines): {log_path}\n")
                out.write(f"The live page {'is' if keep_running else 'was'} at {stack.daemon_url}/ "
                          f"(in a terminal: rollguard get --watch --server {stack.daemon_url})\n")
                if keep_running:
                    out.write(f"\nStill running. Explore with:\n  export KUBECONFIG={stack.cluster.kubeconfig}\n"
                              "  kubectl get deploy,rs,pods -n staging\n"
                              "  kubectl describe deployment/backend -n staging\n"
                              f"  curl {stack.daemon_url}/api/v1/analyses\n"
                              f"  Prometheus: {stack.cluster.prometheus_url}\n"
                              "Press Ctrl-C to stop everything.\n")
                    out.flush()
                    await asyncio.Event().wait()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                stack.cluster.store.remove_listener(demo.on_change)
    expected = {"passed", "rolled back", "review → approved → rolled back", "notified, not rolled back",
                "failed → rolled back", team_alerts.VERDICT, GITOPS_VERDICT}
    return 0 if all(step.verdict in expected for step in demo.steps) else 1


def demo_command(*, fast: bool, keep_running: bool) -> int:
    """Blocking entry point; Ctrl-C (SIGINT) or SIGTERM stops everything that was started.

    The working directory (rule copies, Prometheus data, the daemon's log) is kept for reading afterwards.
    """
    workdir = Path(tempfile.mkdtemp(prefix="rollguard-demo-"))

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await play(fast=fast, keep_running=keep_running, out=sys.stdout, workdir=workdir)
        except asyncio.CancelledError:
            sys.stdout.write("\ninterrupted: everything the demo started has been stopped\n")
            return 130

    return asyncio.run(main())
