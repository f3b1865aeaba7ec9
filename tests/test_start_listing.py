"""The informer's first list at start: the next page is already asked for while one is trimmed, nothing is
left running when the list is cancelled, and the cache is the same as page by page."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bench.common import create_deployments
from daemon.kube import watching
from daemon.kube.client import KubeClient
from daemon.kube.watching import PAGE_SIZE, Informer
from tests.simkit import sim_server


def _page_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("list-deployments-page") and not t.done()]


async def test_the_next_page_is_asked_for_while_one_is_trimmed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        count = 2 * PAGE_SIZE + 10  # three pages
        names = [f"web-{i:04d}" for i in range(count)]
        create_deployments(cluster.store, "big", names)
        in_flight: list[int] = []
        share = watching.share_page

        def observed(items: list[dict[str, Any]], **kwargs: Any) -> Any:
            in_flight.append(len(_page_tasks()))
            return share(items, **kwargs)

        monkeypatch.setattr(watching, "share_page", observed)
        informer = Informer(kube, group_version="apps/v1", plural="deployments")

        async def handler(_kind: str, _obj: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(informer.run(handler))
        try:
            await asyncio.wait_for(informer.synced.wait(), 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert in_flight == [1, 1, 0], "pages 2 and 3 are requested before pages 1 and 2 are trimmed"
        assert sorted(name for _, name in informer.cache) == names


async def test_a_cancelled_list_leaves_no_page_request_behind(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        create_deployments(cluster.store, "big", [f"web-{i:04d}" for i in range(2 * PAGE_SIZE + 10)])
        trimmed = asyncio.Event()
        share = watching.share_page

        def observed(items: list[dict[str, Any]], **kwargs: Any) -> Any:
            trimmed.set()
            return share(items, **kwargs)

        monkeypatch.setattr(watching, "share_page", observed)
        informer = Informer(kube, group_version="apps/v1", plural="deployments")

        async def handler(_kind: str, _obj: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(informer.run(handler))
        await asyncio.wait_for(trimmed.wait(), 30)
        assert _page_tasks(), "the second page is in flight"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert _page_tasks() == [], "cancelling the list cancels the page it had asked for"
        assert not informer.synced.is_set()
