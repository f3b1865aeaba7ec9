"""Push latency: Alertmanager's webhook arrives at the daemon → the rollback PATCH reaches the API server.

The stack of the end-to-end tests (`sim.demo.stack.running_stack`: simulated cluster, a real Prometheus
scraping every second, the daemon in-process) plus a real Alertmanager (`sim.alertmanager`), and the
cluster's Prometheus evaluating a team's alerting rule (`HighErrorRate`: a pod's 5xx share over 20%)
and sending to it. The policy counts that alert for the new revision's pods (`alerts`, scope `pod`) and
rolls back at once (`for: 0s`); its interval is ten minutes, so only the push can act within a run.

Each run deploys a bad image (50% errors) over a good one, on a Deployment of its own (the daemon caps
rollbacks per Deployment and hour), and takes two wall-clock times (epoch seconds):

* `webhook_at`: the first webhook POST that carries a firing alert for one of the bad revision's pods
  arrives. Alertmanager posts to a transparent recording proxy in the bench process, which takes the
  time as its handler starts and forwards the request unchanged to the daemon's
  `/api/v1/alerts/alertmanager` (the daemon's answer, `{"received": N, "woke": M}`, is recorded too);
  the proxy's own hop (one loopback request) is inside the figure, so it is an upper bound;
* `patch_at`: the simulated API server receives the undo — the JSON patch of the Deployment's
  `/spec/template` — as its audit log records it (`AuditRecord.at`, taken as the request arrives).

`to_patch_s = patch_at - webhook_at`: parse, wake the analysis, evaluate, decide, and the undo's
GET + LIST ReplicaSets before its PATCH. The issue's goal: p95 < 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import free_port, logging_to, percentile, summary, write_rules
from daemon.alertmanager_http import WEBHOOK_PATH
from sim.alertmanager import AlertingPrometheus, AlertmanagerServer, find_alertmanager_binary
from sim.apiserver import AuditRecord
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import Stack, running_stack
from sim.resources import REPLICASETS

NAMESPACE = "staging"
TOKEN = "bench-alertmanager-webhook-token"
TARGET_P95_S = 1.0
GOOD = {"SIM_READY_DELAY": "1", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50"}
BAD = {**GOOD, "SIM_ERROR_RATIO": "0.5"}
ALERT_RULES: dict[str, Any] = {"groups": [{"name": "backend", "rules": [{
    "alert": "HighErrorRate",
    "expr": 'sum by (namespace, pod) (rate(http_requests_total{code=~"5.."}[5s]))'
            " / sum by (namespace, pod) (rate(http_requests_total[5s])) > 0.2",
    "for": "0s",
    "labels": {"severity": "critical"},
    "annotations": {"summary": "{{ $labels.pod }} answers too many errors"},
}]}]}


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "rollguard.io/v1", "kind": "RollbackPolicy", "metadata": {"name": "bench-alert-push"},
        "spec": {
            "selector": {"namespaces": [NAMESPACE]},
            "analysis": {"initialDelay": "1s", "interval": "10m", "bakeTime": "30m"},
            "signals": {"firing": {"alerts": {"matchers": ['alertname="HighErrorRate"', 'severity="critical"'],
                                              "scope": "pod"}}},
            "rules": [{"name": "team-alert-firing", "when": "firing > 0", "for": "0s", "action": "rollback"}],
        },
    }


@dataclass(frozen=True)
class Post:
    """One webhook request as the proxy saw it."""

    at: float
    """Epoch seconds when the proxy's handler started."""
    firing_pods: tuple[tuple[str, str], ...]
    """(namespace, pod) of each firing alert in the payload."""
    status: int
    """The daemon's answer."""
    answer: str


class RecordingProxy:
    """Forwards every request to `target` unchanged and records when each webhook arrived."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.posts: list[Post] = []
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        pods: list[tuple[str, str]] = []
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            for alert in json.loads(body).get("alerts") or []:
                labels = alert.get("labels") or {}
                if alert.get("status") == "firing":
                    pods.append((str(labels.get("namespace", "")), str(labels.get("pod", ""))))
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type",
                                                                             "user-agent")}
        assert self._session is not None
        async with self._session.post(self.target, data=body, headers=headers) as resp:
            answer = await resp.text()
            status = resp.status
        self.posts.append(Post(at, tuple(pods), status, answer.strip()))
        return web.Response(status=status, text=answer, content_type="application/json")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on a free loopback port for the block; yields the webhook URL to give Alertmanager."""
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:
                yield f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
            finally:
                self._session = None
                await runner.cleanup()


def undo_patch(audit: list[AuditRecord], name: str) -> AuditRecord | None:
    """The first successful undo of Deployment `name`: a JSON patch whose operations replace `/spec/template`."""
    for record in list(audit):
        if (record.resource, record.verb, record.subresource, record.namespace, record.name) != \
                ("deployments", "patch", "", NAMESPACE, name) or record.code >= 300:
            continue
        with contextlib.suppress(ValueError):
            ops = json.loads(record.body)
            if isinstance(ops, list) and any(isinstance(op, dict) and op.get("path") == "/spec/template"
                                             for op in ops):
                return record
    return None


def bad_hash(stack: Stack, name: str, bad_image: str) -> str | None:
    """The pod-template-hash of the bad image's ReplicaSet, once the controller created it."""
    for rs in stack.cluster.store.iter_objects(REPLICASETS):
        meta = rs.get("metadata") or {}
        containers = (((rs.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
        if meta.get("namespace") == NAMESPACE and str(meta.get("name", "")).startswith(f"{name}-") \
                and containers[0].get("image") == bad_image:
            return str((meta.get("labels") or {}).get("pod-template-hash") or "") or None
    return None


async def _until(predicate: Callable[[], bool], *, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if (error := stack.daemon_failed()) is not None:
            raise RuntimeError(f"the daemon died waiting for {what}: {error!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _one_run(stack: Stack, proxy: RecordingProxy, *, run: int, timeout: float) -> dict[str, Any]:
    name = f"backend-{run}"
    good_image, bad_image = f"{name}:good", f"{name}:bad"
    await stack.apply(backend_service(name=name))
    await stack.apply(backend_deployment(good_image, name=name, env=GOOD, change_cause="deploy good"))
    await stack.kubectl("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=60s")
    applied_at = time.time()
    await stack.apply(backend_deployment(bad_image, name=name, env=BAD, change_cause=f"deploy {bad_image}"))
    hashes: list[str] = []

    def found_hash() -> bool:
        if (found := bad_hash(stack, name, bad_image)) is not None:
            hashes.append(found)
        return bool(hashes)

    await _until(found_hash, timeout=30, what=f"run {run}: the bad ReplicaSet", stack=stack)
    prefix = f"{name}-{hashes[0]}-"
    patches: list[AuditRecord] = []

    def patched() -> bool:
        if (record := undo_patch(stack.cluster.audit, name)) is not None:
            patches.append(record)
        return bool(patches)

    await _until(patched, timeout=timeout, what=f"run {run}: the undo PATCH", stack=stack)
    patch = patches[0]
    relevant = [p for p in proxy.posts if any(ns == NAMESPACE and pod.startswith(prefix) for ns, pod in p.firing_pods)]
    if not relevant:
        raise RuntimeError(f"run {run}: rolled back without a webhook for {prefix}* (posts: {len(proxy.posts)})")
    first = relevant[0]
    # Its pods would go on being scraped and alerted on: the next run starts on a quiet cluster.
    await stack.kubectl("delete", f"deployment/{name}", f"service/{name}", "-n", NAMESPACE, "--wait=false")
    return {"run": run, "image": bad_image, "apply_to_webhook_s": round(first.at - applied_at, 3),
            "to_patch_s": round(patch.at - first.at, 3), "daemon_answer": first.answer,
            "webhook_status": first.status}


def _alertmanager_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, RuntimeError):
        out = subprocess.run([find_alertmanager_binary(), "--version"], capture_output=True, text=True, timeout=10)
        text = out.stdout or out.stderr
        return text.splitlines()[0] if text else ""
    return ""


async def run(*, runs: int = 20, timeout: float = 60.0) -> dict[str, Any]:
    if shutil.which("prometheus") is None:
        raise RuntimeError("prometheus is missing: run `make prometheus`")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-alert-push-") as tmp:
        work = Path(tmp)
        rules = write_rules(work / "rules", [policy()])
        token_file = work / "webhook-token"
        token_file.write_text(TOKEN)
        log_path = work / "daemon.log"
        with log_path.open("w") as log_file, logging_to(log_file):
            async with running_stack(workdir=work, rules_dir=rules, scrape_interval=1.0, start_daemon=False) as stack:
                assert stack.cluster.prometheus is not None
                proxy = RecordingProxy(f"{stack.daemon_url}{WEBHOOK_PATH}")
                async with proxy.serving() as webhook, AlertmanagerServer(webhook_url=webhook, token=TOKEN) as am, \
                        AlertingPrometheus(stack.cluster.prometheus.sd_file, rules=ALERT_RULES,
                                           alertmanager=am.url):
                    stack.settings = replace(stack.settings, alertmanager_url=am.url,
                                             alertmanager_webhook_token_file=token_file)
                    await stack.start_daemon()
                    try:
                        for i in range(1, runs + 1):
                            results.append(await _one_run(stack, proxy, run=i, timeout=timeout))
                    except Exception as exc:
                        log_file.flush()
                        lines = [line for line in log_path.read_text().splitlines()
                                 if '"backend-' in line or "alertmanager" in line][-12:]
                        raise RuntimeError(f"{exc}\n--- daemon log ---\n" + "\n".join(lines)) from exc
    to_patch = [r["to_patch_s"] for r in results]
    p95 = percentile(to_patch, 95)
    return {
        "scenario": "alert_push",
        "alertmanager": _alertmanager_version(),
        "runs": results,
        "to_patch_s": summary(to_patch),
        "apply_to_webhook_s": summary([r["apply_to_webhook_s"] for r in results]),
        "target_p95_s": TARGET_P95_S,
        "meets_target": p95 is not None and p95 < TARGET_P95_S,
    }
