"""A kit for tests of several rollguard replicas: their own paths to the API server, and extra daemons.

`FrontDoor`: another simulated API server over the same Store. The simulated API server accepts
any bearer token and its `AuditRecord`s do not say who asked, so tests that need one client's
requests alone (least privilege), or one replica cut off from the API (leader election), serve the
same Store on another port through `build_app` — the same server code — and point only that
client at it.

`replica(stack, identity)`: one more `rollguard run` against a `running_stack`, wired as
`Stack.start_daemon` wires its own; `kill(replica, door)` ends it as SIGKILL would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.daemon import Extras, run_daemon
from daemon.settings import ListenAddress, RunSettings
from sim.apiserver import AuditRecord, build_app
from sim.demo.stack import ROUTING_KEY, SLACK_CHANNEL, SLACK_TOKEN, Stack, free_port
from sim.kubeconfig import write_kubeconfig
from sim.podlogs import PodLogSource
from sim.resources import LEASES
from sim.store import Store

LEASE_SECONDS = 3.0
"""Lease duration of the replicas `replica()` starts (renew deadline 2 s, retry period 0.4 s)."""


class FrontDoor:
    """Another simulated API server over the same Store: one replica's own network path to "the API".

    `close()` cuts that replica off (connections refused from then on), as a partition or a dead node would.
    """

    def __init__(self, store: Store, workdir: Path, *, logs: PodLogSource | None = None,
                 audit: list[AuditRecord] | None = None) -> None:
        app = build_app(store, logs=logs, audit=audit)
        self._open = asyncio.Event()
        self._open.set()

        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            await self._open.wait()
            return await handler(request)

        app.middlewares.append(gate)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._workdir = workdir
        self._closed = False
        self.kubeconfig = Path()

    async def __aenter__(self) -> FrontDoor:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.kubeconfig = write_kubeconfig(self._workdir / f"kubeconfig-{port}", f"http://{host}:{port}")
        return self

    def freeze(self) -> None:
        """From now on requests are accepted and never answered (a black-holed network path)."""
        self._open.clear()

    def thaw(self) -> None:
        """Answer again, frozen requests included."""
        self._open.set()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._open.set()  # let frozen requests finish, so no handler outlives the server
            await self._runner.cleanup()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclasses.dataclass
class Replica:
    """One `rollguard run` of the pair, with its own identity, HTTP port and (optionally) API path."""

    identity: str
    settings: RunSettings
    task: asyncio.Task[None]
    stop: asyncio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_listen.port}"


@contextlib.asynccontextmanager
async def replica(stack: Stack, identity: str, *, kubeconfig: Path | None = None) -> AsyncIterator[Replica]:
    """Run one more daemon against the stack, wired as `Stack.start_daemon` wires its own."""
    settings = dataclasses.replace(stack.settings, identity=identity, lease_duration=LEASE_SECONDS,
                                   http_listen=ListenAddress("127.0.0.1", free_port()),
                                   kubeconfig=kubeconfig or stack.settings.kubeconfig)
    extras = Extras(prometheus_url=stack.cluster.prometheus_url, pagerduty_ssl=stack.pagerduty.client_ssl_context(),
                    notify_config={"slack": {"channel": SLACK_CHANNEL, "baseUrl": stack.slack.url, "timeout": 5},
                                   "pagerduty": {"baseUrl": stack.pagerduty.url, "timeout": 5}})
    env = {"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN, "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(settings, stop=stop, extras=extras, env=env), name=f"daemon-{identity}")
    try:
        yield Replica(identity, settings, task, stop)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def kill(replica: Replica, door: FrontDoor | None = None) -> None:
    """SIGKILL: its network path goes first, so nothing it does on the way out reaches the API."""
    if door is not None:
        await door.close()
    replica.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await replica.task


def holder(stack: Stack) -> str | None:
    lease = stack.cluster.store.peek(LEASES, "default", stack.settings.lease_name)
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")
