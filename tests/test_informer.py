"""The informer against the simulated API server: a watch that resumes too late gets 410 Expired,
re-lists, and reconciles its cache — objects deleted meanwhile are handed over as DELETED."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from daemon.kube.client import KubeClient, api_path
from daemon.kube.watching import Informer
from tests.simkit import deployment_manifest, sim_server
from tests.waiting import eventually


async def test_an_expired_watch_relists_and_reconciles_the_cache(tmp_path: Path) -> None:
    async with sim_server(tmp_path, history_size=5) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        path = api_path("apps/v1", "deployments", "default")
        await kube.create(path, deployment_manifest("web-0"))
        gate = asyncio.Event()
        gate.set()
        seen: list[tuple[str, str]] = []

        async def handler(kind: str, obj: dict[str, object]) -> None:
            seen.append((kind, str((obj.get("metadata") or {}).get("name"))))  # type: ignore[union-attr]
            await gate.wait()

        relisted: list[str] = []
        informer = Informer(kube, group_version="apps/v1", plural="deployments", namespaces=("default",),
                            watch_timeout=1, on_relist=relisted.append)
        task = asyncio.create_task(informer.run(handler))
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            gate.clear()  # the handler is slow: the watch falls behind the server's short history
            await kube.create(path, deployment_manifest("web-1"))
            await eventually(lambda: ("ADDED", "web-1") in seen, timeout=10, what="web-1's ADDED")
            # The server ends the watch after its 1 s timeout while the handler is still busy; what
            # happens after that is only in the server's history, which is shorter than what follows.
            await asyncio.sleep(2)
            for i in range(2, 10):
                await kube.create(path, deployment_manifest(f"web-{i}"))
            await kube.delete(api_path("apps/v1", "deployments", "default", "web-0"))
            gate.set()
            await eventually(lambda: relisted == ["deployments"], timeout=15, what="a re-list after 410")
            await eventually(lambda: {k[1] for k in informer.cache} == {f"web-{i}" for i in range(1, 10)},
                             timeout=15, what="the cache to match the server")
            assert ("DELETED", "web-0") in seen
            assert informer.relists == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
