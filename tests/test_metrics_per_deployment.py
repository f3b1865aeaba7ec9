"""End to end: the per-Deployment series of `/metrics` and the `/api/v2/analyses` document, while an
analysis runs and after it ended.

While revision 2 (12% of requests fail) is analysed, `/metrics` carries its stage, each signal's
reading and each rule's pending time, and `/api/v2/analyses` shows the rule counting up to its `for`;
once rolled back, the per-Deployment series are gone, and the superseded revision 1 is listed once,
as superseded (it used to stay `analysing` next to its superseded twin).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sim.demo.stack import Stack, running_stack
from tests.e2ekit import RULES, deploy, eventually, image_of, revision_of, serving_v1, state_of

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

PER_DEPLOYMENT = ("rollguard_analysis_state", "rollguard_signal_value", "rollguard_rule_pending_seconds")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def get(stack: Stack, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(stack.daemon_url + path) as response:
        assert response.status == 200, (path, response.status)
        return await (response.json() if path.startswith("/api/") else response.text())


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The per-Deployment samples: (name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name in PER_DEPLOYMENT}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"namespace": "staging", "deployment": "backend", **labels}.items()))


async def test_per_deployment_series_live_only_and_the_v2_document(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

        seen: dict[str, Any] = {}

        async def pending_seen() -> bool:
            seen["metrics"] = series(await get(stack, "/metrics"))
            seen["doc"] = await get(stack, "/api/v2/analyses")
            return seen["metrics"].get(key("rollguard_rule_pending_seconds", rule="error-rate-over-5pct"), 0) > 0

        for _ in range(300):  # scrape as Prometheus would, until the rule is pending
            if await pending_seen():
                break
            await asyncio.sleep(0.2)
        metrics = seen["metrics"]
        assert metrics.get(key("rollguard_rule_pending_seconds", rule="error-rate-over-5pct"), 0) > 0, metrics
        assert metrics[key("rollguard_analysis_state")] == 1.0, metrics
        assert abs(metrics[key("rollguard_signal_value", signal="error_rate")] - 0.12) < 0.02, metrics
        assert metrics[key("rollguard_signal_value", signal="health")] == 1.0, metrics
        assert metrics[key("rollguard_rule_pending_seconds", rule="key-feature-down")] == 0.0, metrics

        doc = seen["doc"]
        assert (doc["apiVersion"], doc["kind"]) == ("rollguard.io/v2", "AnalysisList"), doc
        item = next(i for i in doc["items"] if i["revision"] == 2)
        assert (item["state"], item["live"], item["policy"]) == ("analysing", True, "backend-staging-fast"), item
        assert item["images"] == {"old": ["backend:v1"], "new": ["backend:v2"]}, item
        assert RFC3339.match(item["startedAt"]), item["startedAt"]
        rule = next(r for r in item["rules"] if r["name"] == "error-rate-over-5pct")
        assert re.fullmatch(r"pending \ds of 3s", rule["text"]), rule
        assert (rule["status"], rule["action"], rule["forSeconds"]) == ("pending", "rollback", 3.0), rule
        error_rate = next(s for s in item["signals"] if s["name"] == "error_rate")
        assert error_rate["thresholds"] == [{"rule": "error-rate-over-5pct", "op": ">", "value": 0.05}], error_rate
        assert error_rate["history"], error_rate
        assert all(RFC3339.match(t) for t, _ in error_rate["history"]), error_rate["history"]
        assert [m["event"] for m in item["marks"] if m["rule"] == "error-rate-over-5pct"] == ["pending"], item["marks"]
        assert 0 <= item["nextEvaluationInSeconds"] <= 1, item

        # While the rollback runs (the undo's own rollout already tracked, the analysis still announcing),
        # the analysis stays listed with its readings: never only what the state annotation says.
        lost: list[str] = []

        async def watch_rollback() -> None:
            while True:
                for i in (await get(stack, "/api/v2/analyses"))["items"]:
                    if i["revision"] == 2 and i.get("source") == "annotation":
                        lost.append(i["state"])
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_rollback())
        try:
            await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, what="the rollback", stack=stack)
            await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30, stack=stack,
                             what="the rollback to complete")
        finally:
            watcher.cancel()
        assert lost == [], f"revision 2 was shown from its annotation only, in states {sorted(set(lost))}"
        assert series(await get(stack, "/metrics")) == {}, "no per-Deployment series once no analysis runs"

        doc = await get(stack, "/api/v2/analyses")
        states = [(i["revision"], i["state"], i["live"]) for i in doc["items"]]
        assert states == [(2, "rolled-back", False), (1, "superseded", False)], states
        ended = doc["items"][0]
        assert [m["event"] for m in ended["marks"] if m["rule"] == "error-rate-over-5pct"] == ["pending", "fired"]
        assert ended["verdict"]["rule"] == "error-rate-over-5pct", ended["verdict"]
        v1 = await get(stack, "/api/v1/analyses")
        assert sorted((a["revision"], a["phase"]) for a in v1["analyses"]) == [(1, "superseded"), (2, "rolled-back")]
        assert all("detail" not in a for a in v1["analyses"]), "v1 keeps its shape"
