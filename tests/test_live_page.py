"""End to end in a real browser: the live page at `/` shows a running analysis and its charts, then the rollback.

Debian's headless `chromium` (installed by `scripts/ensure-chromium`) loads the daemon's page and is
driven over the DevTools protocol (aiohttp's websocket client): every console error and uncaught
exception is collected and must stay empty. The page must show revision 2's `error-rate-over-5pct`
rule pending with the error-rate chart (its series and its threshold line), then the rollback with
the moment the rule fired marked. `ROLLGUARD_SCREENSHOT=docs/live-page.png` saves the screenshot
of the rollback that the README shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sim.demo.stack import free_port, running_stack
from tests.e2ekit import RULES, deploy, eventually, revision_of, serving_v1

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]


class Page:
    """One browser tab, spoken to over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._answers:
                self._answers.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(data["params"]["exceptionDetails"])[:500])
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] in ("error", "assert"):
                self.errors.append(json.dumps(data["params"]["args"])[:500])
            elif data.get("method") == "Log.entryAdded" and data["params"]["entry"]["level"] == "error":
                self.errors.append(data["params"]["entry"]["text"][:500])

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self._answers[ident] = asyncio.get_running_loop().create_future()
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(self._answers[ident], timeout=15)
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def browser_page(url: str, workdir: Path) -> AsyncIterator[Page]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: run scripts/ensure-chromium (make pytest does)"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--remote-debugging-port={port}", f"--user-data-dir={workdir / 'chromium'}", "--window-size=1200,900",
        "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            targets: list[dict[str, Any]] = []

            async def listed() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                        targets[:] = [t for t in await response.json() if t["type"] == "page"]
                return bool(targets)

            for _ in range(100):  # the browser takes a moment to open its debugging port
                if await listed():
                    break
                await asyncio.sleep(0.1)
            assert targets, "chromium did not open its debugging port"
            async with session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await page.call(f"{domain}.enable")
                await page.call("Emulation.setDeviceMetricsOverride", width=1200, height=900, deviceScaleFactor=1,
                                mobile=False)
                await page.call("Page.navigate", url=url)
                try:
                    yield page
                finally:
                    await page.close()
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_live_page_shows_the_analysis_its_charts_and_the_rollback(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        async with browser_page(stack.daemon_url + "/", tmp_path) as page:
            await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
            await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
            card = "document.querySelector('[data-rollout=\"staging/backend/2\"]')"
            rule = f"{card}?.querySelector('[data-rule=\"error-rate-over-5pct\"] td:nth-child(2)')?.textContent"
            chart = f"{card}?.querySelector('[data-signal=\"error_rate\"]')"

            async def poll(expression: str, what: str) -> Any:
                for _ in range(400):
                    value = await page.evaluate(expression)
                    if value:
                        return value
                    assert stack.daemon_failed() is None, stack.daemon_failed()
                    await asyncio.sleep(0.1)
                raise AssertionError(f"the page never showed {what}: {await page.evaluate('document.body.innerText')}")

            shown = await poll(f"({rule} || '').startsWith('pending') && {rule}", "the rule pending")
            assert shown.endswith(" of 3s"), shown
            assert await page.evaluate(f"{card}.querySelector('.state').textContent") == "analysing"
            assert await page.evaluate(f"!!{chart}.querySelector('polyline.series')"), "the error rate is drawn"
            assert await page.evaluate(f"{chart}.querySelectorAll('line.threshold').length") == 1
            assert await page.evaluate(f"!!{chart}.querySelector('line.mark-pending')"), "the pending moment"

            await poll(f"{card}?.querySelector('.state').textContent === 'rolled-back'", "the rollback")
            assert await page.evaluate(f"{rule}") == "fired"
            assert await page.evaluate(f"!!{chart}.querySelector('line.mark-fired')"), "the firing moment"
            verdict = await page.evaluate(f"{card}.querySelector('.verdict').textContent")
            assert "error-rate-over-5pct" in verdict, verdict

            shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            png = base64.b64decode(shot["data"])
            assert png.startswith(b"\x89PNG"), png[:8]
            if target := os.environ.get("ROLLGUARD_SCREENSHOT"):
                await asyncio.to_thread(Path(target).write_bytes, png)
            assert page.errors == [], page.errors
