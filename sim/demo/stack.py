"""Everything rollguard talks to, running on this machine, plus the daemon itself.

The simulated cluster (API server, controllers, workloads), a real Prometheus scraping it, the
local Slack and PagerDuty receivers, and `rollguard run` wired to all of them — exactly what
`rollguard demo` shows and what the end-to-end tests drive. The daemon runs in-process as an
asyncio task so it can be stopped and started again (a restart mid-analysis) without touching
the cluster; it only ever talks to the cluster over HTTP, as it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.daemon import Extras, run_daemon
from daemon.settings import ActionLimits, ListenAddress, LogSettings, RunSettings
from sim.cluster import SimCluster, running_cluster
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver

SLACK_TOKEN = "xoxb-1111111111-2222222222-rollguarddemotokenabcdef"
ROUTING_KEY = "R0LLGUARDDEM0R0UT1NGKEY000000001"  # 32 characters, as PagerDuty's are
SLACK_CHANNEL = "#deploys"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """Handles on the running pieces."""

    cluster: SimCluster
    slack: SlackReceiver
    pagerduty: PagerDutyReceiver
    settings: RunSettings
    workdir: Path
    daemon_task: asyncio.Task[None] | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def daemon_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_listen.port}"

    def _extras(self) -> Extras:
        return Extras(prometheus_url=self.cluster.prometheus_url, pagerduty_ssl=self.pagerduty.client_ssl_context(),
                      notify_config={
                          "slack": {"channel": SLACK_CHANNEL, "baseUrl": self.slack.url, "timeout": 5},
                          "pagerduty": {"baseUrl": self.pagerduty.url, "timeout": 5},
                      })

    async def start_daemon(self) -> None:
        """Start `rollguard run` (again) against the cluster and the receivers."""
        if self.daemon_task is not None and not self.daemon_task.done():
            raise RuntimeError("the daemon is already running")
        self.stop_event = asyncio.Event()
        env = {"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN, "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
        self.daemon_task = asyncio.create_task(
            run_daemon(self.settings, stop=self.stop_event, extras=self._extras(), env=env), name="rollguard-daemon")

    async def stop_daemon(self, *, kill: bool = False) -> None:
        """Stop the daemon: gracefully, or `kill` — cancel it at once, as SIGKILL would end it mid-work."""
        task = self.daemon_task
        if task is None:
            return
        self.daemon_task = None
        if kill:
            task.cancel()
        else:
            self.stop_event.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def daemon_failed(self) -> BaseException | None:
        task = self.daemon_task
        if task is not None and task.done() and not task.cancelled():
            return task.exception()
        return None

    async def kubectl(self, *args: str, binary: str = "kubectl", input_text: str | None = None,
                      check: bool = True) -> str:
        """Run the real kubectl against the simulated cluster; returns stdout."""
        proc = await asyncio.create_subprocess_exec(
            binary, "--kubeconfig", str(self.cluster.kubeconfig), *args,
            stdin=asyncio.subprocess.PIPE if input_text is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(self.workdir), "PATH": "/usr/local/bin:/usr/bin:/bin"})
        out, err = await proc.communicate(input_text.encode() if input_text is not None else None)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode()

    async def apply(self, manifest: Mapping[str, Any]) -> str:
        """`kubectl apply -f -` of one object."""
        return await self.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))


@contextlib.asynccontextmanager
async def running_stack(*, workdir: Path, rules_dir: Path, namespaces: tuple[str, ...] = ("staging",),
                        speed: float = 1.0, scrape_interval: float = 1.0, dry_run: bool = False,
                        leader_election: bool = False, start_daemon: bool = True,
                        log: LogSettings | None = None, routing_keys: tuple[str, ...] = (),
                        with_prometheus: bool = True, actions: ActionLimits | None = None) -> AsyncIterator[Stack]:
    """Cluster + Prometheus + receivers (+ the daemon); everything is stopped on exit. `routing_keys`: more
    PagerDuty keys the receiver accepts (policies' own), besides the daemon-wide one; without
    `with_prometheus` the daemon has no Prometheus (policies of HTTP, WebSocket and log signals only);
    `actions`: the rollback cap and write margin (default: the daemon's)."""
    async with running_cluster(workdir=workdir, speed=speed, with_prometheus=with_prometheus,
                               scrape_interval=scrape_interval) as cluster, \
            SlackReceiver(tokens=[SLACK_TOKEN]) as slack, \
            PagerDutyReceiver(routing_keys=[ROUTING_KEY, *routing_keys]) as pagerduty:
        settings = RunSettings(
            rules_dir=rules_dir, kubeconfig=cluster.kubeconfig, namespaces=namespaces, dry_run=dry_run,
            http_listen=ListenAddress("127.0.0.1", free_port()), log=log or LogSettings(),
            leader_election=leader_election, lease_namespace="default", identity="rollguard-0",
            service_proxy=cluster.workload_url, prometheus_url=cluster.prometheus_url,
            actions=actions or ActionLimits())
        stack = Stack(cluster, slack, pagerduty, settings, workdir)
        for namespace in namespaces:
            with contextlib.suppress(RuntimeError):  # already exists
                await stack.kubectl("create", "namespace", namespace)
        # The Secret the chart creates in the daemon's namespace; the example policy pages through it.
        await stack.kubectl("create", "secret", "generic", "rollguard", "-n", settings.lease_namespace,
                            f"--from-literal=pagerduty-routing-key={ROUTING_KEY}")
        if start_daemon:
            await stack.start_daemon()
        try:
            yield stack
        finally:
            await stack.stop_daemon()

