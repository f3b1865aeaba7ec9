"""The measurer's seams: one missing provider never blanks the others, a policy the daemon cannot
measure is refused at load, and whatever one signal's measurement raises is that signal's error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from daemon.clock import FakeClock
from daemon.kube.rollout_state import RolloutId
from daemon.measure import ProviderMeasurer, can_run, measure_safely
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rollout import Rollout
from daemon.rules.loader import load_file
from daemon.rulesets import RuleSet, RulesInvalid
from sim.services import WorkloadServer
from sim.store import Store
from tests.promkit import make_pod, make_service

POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {name: NAME}
spec:
  selector: {namespaces: [staging]}
  signals:
SIGNALS
  rules:
    - {name: down, when: "WHEN", action: rollback}
"""
PROMETHEUS = '    error_rate: {prometheus: {query: "sum(rate(http_requests_total[1m]))"}}\n'
HEALTH = '    health: {http: {url: "http://backend.staging:8000/health", expectStatus: 200}}\n'


def write_policy(directory: Path, name: str, signals: str, when: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(POLICY.replace("NAME", name).replace("SIGNALS\n", signals).replace("WHEN", when))
    return path


async def test_a_missing_prometheus_does_not_blank_the_http_check(tmp_path: Path, store: Store,
                                                                   server: WorkloadServer) -> None:
    """Finding 4: with no Prometheus URL, every signal of the policy (HTTP checks too) read `error`."""
    make_service(store, "staging", "backend")
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa", env={"SIM_READY_DELAY": "0"})
    path = write_policy(tmp_path, "both", PROMETHEUS + HEALTH, "error_rate > 0.05 || !health.ok")
    policy = load_file(path).policies[0]
    ctx = SignalContext("staging", "backend", 2, "5d8f7c9b4", "backend-5d8f7c9b4-", {}, 0.0)
    rollout = Rollout(RolloutId("staging", "backend", 2, "5d8f7c9b4"), policy, ctx, None, 0.0)
    async with aiohttp.ClientSession() as session:
        measurer = ProviderMeasurer(prometheus_url=None, kube=None, session=session, proxy=server.url,
                                    clock=FakeClock())
        measured = await measurer.measure(rollout)
        await measurer.close()
    assert measured["health"].phase is Phase.OK, measured["health"]
    assert measured["error_rate"].phase is Phase.ERROR


def test_a_policy_that_needs_prometheus_is_refused_without_one_naming_the_setting(tmp_path: Path) -> None:
    write_policy(tmp_path, "prom", PROMETHEUS, "error_rate > 0.05")
    rules = RuleSet(tmp_path, can_run=lambda policy: can_run(policy, prometheus_url=None))
    with pytest.raises(RulesInvalid, match=r"prom\.yaml:7: spec\.signals\.error_rate\.prometheus: this daemon has "
                                           r"no Prometheus to query: set --prometheus-url"):
        rules.load()


def test_only_that_policy_is_refused_when_others_can_run(tmp_path: Path) -> None:
    write_policy(tmp_path, "prom", PROMETHEUS, "error_rate > 0.05")
    write_policy(tmp_path, "web", HEALTH, "!health.ok")
    rules = RuleSet(tmp_path, can_run=lambda policy: can_run(policy, prometheus_url=None))
    rules.load()
    assert [p.name for p in rules.policies] == ["web"]
    assert list(rules.refused) == [str(tmp_path / "prom.yaml")]
    assert "ROLLGUARD_PROMETHEUS_URL" in rules.refused[str(tmp_path / "prom.yaml")]


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), ValueError("Line too long"),
                                   KeyError("x"), RuntimeError("a bug")])
async def test_whatever_a_measurement_raises_is_that_signals_error(error: Exception) -> None:
    """Finding 3: an exception that is not a ClientError (aiohttp's LineTooLong, a RecursionError from a
    deep JSON body) escaped the provider and killed the analysis."""

    async def provider() -> Measurement:
        raise error

    measured = await measure_safely("log_errors", provider(), timeout=5)
    assert measured.phase is Phase.ERROR
    assert measured.message.startswith(f"log_errors: the measurement failed ({type(error).__name__}")


async def test_a_measurement_that_hangs_is_an_error_after_its_timeout() -> None:
    measured = await measure_safely("slow", asyncio.sleep(60), timeout=0.05)  # type: ignore[arg-type]
    assert (measured.phase, measured.message) == (Phase.ERROR, "slow: no answer within 0.05s")
