"""The chaos stack: the simulated cluster with fault hooks, a real Prometheus, the receivers, and
`rollguard run` as real subprocesses (so SIGKILL is a real SIGKILL).

Each daemon replica has its own bearer token (`rollguard-<identity>`), so the API server's audit log
says which replica made each request; its stdout/stderr go to `<workdir>/<identity>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from sim.cluster import SimCluster, running_cluster
from sim.controllers.hashing import template_hash
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import ROUTING_KEY, SLACK_CHANNEL, SLACK_TOKEN, free_port
from sim.faults import Faults
from sim.kubeconfig import write_kubeconfig
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver
from sim.resources import DEPLOYMENTS, LEASES
from sim.store import WatchEvent

REPO = Path(__file__).resolve().parents[2]
RULES = Path(__file__).parent / "rules"
SPEED = 1.0
"""Simulated seconds per real second. Not sped up: the daemon dates a rollout (and its `baseline:
previous` query) by the cluster's timestamps, which Prometheus — on the real clock — must agree with.
Schedules are kept short instead by fast pods (SIM_READY_DELAY 0.5), a 6 s progress deadline and
second-sized policy timings."""
LEASE_SECONDS = 2.0
SRE = "sre"
"""The bearer token of the harness's own deploys (the audit log's user for them)."""
SECRETS = (SLACK_TOKEN, ROUTING_KEY)


@dataclass
class Replica:
    identity: str
    port: int
    kubeconfig: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    kills: int = 0

    @property
    def user(self) -> str:
        return f"rollguard-{self.identity}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL, synchronously (safe to call from inside an API server request)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.kills += 1


@dataclass
class RevisionSeen:
    """A Deployment change the harness watched: when, which revision, which template."""

    at: float
    revision: int
    template_hash: str
    image: str


@dataclass
class ChaosStack:
    cluster: SimCluster
    faults: Faults
    slack: SlackReceiver
    pagerduty: PagerDutyReceiver
    workdir: Path
    variant: str
    dry_run: bool
    replicas: list[Replica] = field(default_factory=list)
    timeline: list[RevisionSeen] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    # ----- daemons -----

    def add_replica(self, identity: str) -> Replica:
        user = f"rollguard-{identity}"
        kubeconfig = write_kubeconfig(self.workdir / f"kubeconfig-{identity}", self.cluster.api_url, token=user)
        replica = Replica(identity, free_port(), kubeconfig, self.workdir / f"{identity}.log")
        self.replicas.append(replica)
        return replica

    async def start(self, replica: Replica) -> None:
        if replica.running:
            return
        notify = {"slack": {"channel": SLACK_CHANNEL, "baseUrl": self.slack.url, "timeout": 5},
                  "pagerduty": {"baseUrl": self.pagerduty.url, "caFile": self.pagerduty.ca_file, "timeout": 5}}
        notify_path = self.workdir / "notify.yaml"
        notify_path.write_text(yaml.safe_dump(notify))
        args = [sys.executable, "-m", "tests.chaos.launcher", "--variant", self.variant, "--", "run",
                "--rules", str(RULES), "--kubeconfig", str(replica.kubeconfig), "-n", "staging",
                "--http-listen", f"127.0.0.1:{replica.port}", "--prometheus-url", str(self.cluster.prometheus_url),
                "--notify-config", str(notify_path), "--service-proxy", self.cluster.workload_url,
                "--log-format", "json"]
        if self.dry_run:
            args.append("--dry-run")
        if len(self.replicas) > 1:
            args.append("--leader-election")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "HOME": str(self.workdir),
               "ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN, "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
               "ROLLGUARD_POD_NAME": replica.identity, "ROLLGUARD_LEASE_DURATION": f"{LEASE_SECONDS:g}",
               "ROLLGUARD_LEASE_NAMESPACE": "default"}
        log = replica.log_path.open("ab")
        try:
            replica.process = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=env, stdout=log,
                                                                   stderr=asyncio.subprocess.STDOUT)
        finally:
            log.close()

    async def stop(self, replica: Replica) -> None:
        process = replica.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart_later(self, replica: Replica, delay: float) -> None:
        if replica.process is not None:
            await replica.process.wait()
        await asyncio.sleep(delay)
        await self.start(replica)

    def leader(self) -> Replica | None:
        lease = self.cluster.store.peek(LEASES, "default", "rollguard")
        holder = None if lease is None else (lease.get("spec") or {}).get("holderIdentity")
        return next((r for r in self.replicas if r.identity == holder), None)

    # ----- the harness's own writes (as an SRE with kubectl would) -----

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {SRE}", "Content-Type": content_type}
        async with self.session.request(method, f"{self.cluster.api_url}{path}", headers=headers,
                                        data=None if body is None else json.dumps(body)) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer.get('message')}")
            return answer

    async def setup_namespace(self) -> None:
        await self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "staging"}})
        await self.request("POST", "/api/v1/namespaces/staging/services", backend_service())

    async def deploy(self, image: str, env: dict[str, str]) -> None:
        """Apply the backend Deployment with this image and SIM_* env (create or replace the template)."""
        manifest = backend_deployment(image, env=env, change_cause=f"deploy {image}", progress_deadline=6)
        path = "/apis/apps/v1/namespaces/staging/deployments"
        if self.cluster.store.peek(DEPLOYMENTS, "staging", "backend") is None:
            await self.request("POST", path, manifest)
            return
        patch = {"metadata": {"annotations": manifest["metadata"]["annotations"]},
                 "spec": {"template": manifest["spec"]["template"]}}
        await self.request("PATCH", f"{path}/backend", patch, content_type="application/merge-patch+json")

    def on_store_event(self, event: WatchEvent) -> None:
        if event.bucket != DEPLOYMENTS.bucket or event.name != "backend" or event.type == "DELETED":
            return
        obj = event.obj
        revision = int((obj["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
        digest = template_hash(obj["spec"]["template"], (obj.get("status") or {}).get("collisionCount"))
        image = str(obj["spec"]["template"]["spec"]["containers"][0]["image"])
        last = self.timeline[-1] if self.timeline else None
        if last is None or (last.revision, last.template_hash) != (revision, digest):
            self.timeline.append(RevisionSeen(time.time(), revision, digest, image))

    async def analyses(self) -> list[str]:
        """`/api/v1/analyses` of every running replica, as text (for the secret scan)."""
        assert self.session is not None
        texts = []
        for replica in self.replicas:
            if not replica.running:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(f"http://127.0.0.1:{replica.port}/api/v1/analyses",
                                            timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    texts.append(await resp.text())
        return texts


@contextlib.asynccontextmanager
async def chaos_stack(workdir: Path, *, variant: str = "none", dry_run: bool = False,
                      replicas: int = 1) -> AsyncIterator[ChaosStack]:
    faults = Faults()
    async with running_cluster(workdir=workdir, speed=SPEED, with_prometheus=True, faults=faults) as cluster, \
            SlackReceiver(tokens=[SLACK_TOKEN]) as slack, PagerDutyReceiver(routing_keys=[ROUTING_KEY]) as pd, \
            aiohttp.ClientSession() as session:
        stack = ChaosStack(cluster, faults, slack, pd, workdir, variant, dry_run, session=session)
        cluster.store.add_listener(stack.on_store_event)
        for i in range(replicas):
            stack.add_replica(f"r{i}")
        try:
            yield stack
        finally:
            faults.clear()
            for replica in stack.replicas:
                await stack.stop(replica)
