"""A real Alertmanager, and a real Prometheus that evaluates alerting rules and sends to it (tests, demo, bench).

`AlertmanagerServer` runs Debian's `prometheus-alertmanager` on a free loopback port, clustering off,
with one webhook receiver (payload version 4) pointing at a given URL with a bearer token, and short
`group_wait` / `group_interval` so a firing alert is posted within about a second.
`AlertingPrometheus` is the simulated cluster's Prometheus (`sim.prometheus.PrometheusServer`) plus an
alerting rule file and `alerting.alertmanagers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from sim.prometheus import PrometheusServer, free_port

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


def find_alertmanager_binary() -> str:
    for name in ALERTMANAGER_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("the Alertmanager binary is missing: run scripts/ensure-alertmanager "
                       "(or apt-get install prometheus-alertmanager)")


class AlertmanagerServer:
    """A real Alertmanager for the life of an `async with`; `url` is its base URL."""

    def __init__(self, *, webhook_url: str, token: str, group_interval: float = 1.0) -> None:
        self.webhook_url = webhook_url
        self.token = token
        self.group_interval = group_interval
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        interval = f"{int(self.group_interval * 1000)}ms"
        return {
            # One group per alert ('...'), posted at once and re-posted when it changes.
            "route": {"receiver": "rollguard", "group_by": ["..."], "group_wait": "50ms",
                      "group_interval": interval, "repeat_interval": "1h"},
            "receivers": [{"name": "rollguard", "webhook_configs": [{
                "url": self.webhook_url, "send_resolved": True, "max_alerts": 100,
                "http_config": {"authorization": {"type": "Bearer", "credentials": self.token}},
            }]}],
        }

    async def __aenter__(self) -> AlertmanagerServer:
        binary = find_alertmanager_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="rollguard-alertmanager-"))
        (self._dir / "alertmanager.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._log = (self._dir / "alertmanager.log").open("wb")
        self.port = free_port()
        self._proc = self._spawn(binary)
        try:
            await self._wait_ready()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        # Clustering off (an empty cluster address): one instance, no gossip port to collide on.
        return subprocess.Popen(
            [binary, f"--config.file={self._dir / 'alertmanager.yml'}", f"--storage.path={self._dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def _wait_ready(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(f"Alertmanager exited ({self._proc.returncode}): {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/-/ready") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"Alertmanager not ready within {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "alertmanager.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def stop(self) -> None:
        """Stop the server (to test what an unreachable Alertmanager does); the directory stays."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Raise alerts through Alertmanager's own API, as Prometheus does (`POST /api/v2/alerts`)."""
        async with aiohttp.ClientSession() as session, \
                session.post(f"{self.url}/api/v2/alerts", json=alerts) as resp:
            assert resp.status == 200, await resp.text()


class AlertingPrometheus(PrometheusServer):
    """The cluster's Prometheus, also evaluating `rules` (the content of a rule file) and sending to an Alertmanager."""

    def __init__(self, sd_file: str | Path, *, rules: dict[str, Any], alertmanager: str,
                 scrape_interval: float = 1.0) -> None:
        super().__init__(sd_file, scrape_interval=scrape_interval)
        self.rules = rules
        self.alertmanager = alertmanager
        self._rules_file = Path(tempfile.mkdtemp(prefix="rollguard-alert-rules-")) / "alerts.yml"
        self._rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["rule_files"] = [str(self._rules_file)]
        host = self.alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        return config

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            shutil.rmtree(self._rules_file.parent, ignore_errors=True)
