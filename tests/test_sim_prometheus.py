"""The simulator's Prometheus wiring, judged by the real Prometheus (Debian's `prometheus` package).

These tests run the binary; where it is missing they fail with the install hint, they do not skip.
Prometheus samples in real time, so the cluster clock here is a `ScaledClock` at speed 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from daemon.clock import FakeClock, ScaledClock
from sim.prometheus import (
    BINARY_ENV,
    PrometheusNotInstalled,
    PrometheusServer,
    PrometheusStartError,
    PrometheusTargets,
    find_prometheus_binary,
)
from sim.resources import PODS
from sim.store import Store
from sim.workload import render_metrics
from tests.promkit import instant_query, make_pod, pod_object, poll, prometheus_stack

ERROR_RATIO = """
sum(rate(http_requests_total{namespace="staging",deployment="backend",code=~"5.."}[15s]))
/ sum(rate(http_requests_total{namespace="staging",deployment="backend"}[15s]))
"""
P95_BY_POD = """
histogram_quantile(0.95, sum by (pod, le) (
  rate(http_request_duration_seconds_bucket{namespace="staging",deployment="backend"}[15s])))
"""
# Enough scrapes in the window that one request more or less cannot move the ratio by 0.02.
SAMPLES_IN_WINDOW = 'min(count_over_time(http_requests_total{namespace="staging",deployment="backend"}[15s]))'

pytestmark = pytest.mark.prometheus


# ----- the targets file -----

def read_targets(path: Path) -> dict[str, dict[str, str]]:
    return {g["labels"]["pod"]: g for g in json.loads(path.read_text())}


async def test_the_targets_file_follows_running_pods(tmp_path: Path) -> None:
    store = Store(FakeClock())
    make_pod(store, "staging", "backend-5d8f7c9b4-aaaaa")
    make_pod(store, "staging", "backend-5d8f7c9b4-pending", started=None)
    path = tmp_path / "targets.json"
    with PrometheusTargets(store, "http://127.0.0.1:8123", path, debounce=0.01) as targets:
        assert read_targets(path) == {"backend-5d8f7c9b4-aaaaa": {
            "targets": ["127.0.0.1:8123"],
            "labels": {"__metrics_path__": "/pods/staging/backend-5d8f7c9b4-aaaaa/metrics", "job": "kubernetes-pods",
                       "instance": "staging/backend-5d8f7c9b4-aaaaa", "namespace": "staging",
                       "pod": "backend-5d8f7c9b4-aaaaa", "deployment": "backend", "pod_template_hash": "5d8f7c9b4"},
        }}, "written at once, pending pods left out"

        make_pod(store, "staging", "backend-5d8f7c9b4-bbbbb")
        store.delete(PODS, "staging", "backend-5d8f7c9b4-aaaaa")

        async def updated() -> bool | None:
            return True if set(read_targets(path)) == {"backend-5d8f7c9b4-bbbbb"} else None

        await poll(updated, timeout=5, interval=0.01, what="targets file updated")
        assert sorted(os.listdir(tmp_path)) == ["targets.json"], "no temporary file left behind"
        targets.close()
        make_pod(store, "staging", "backend-5d8f7c9b4-ccccc")
        targets.flush()  # an explicit flush still writes; only the automatic updates stop
    assert set(read_targets(path)) == {"backend-5d8f7c9b4-bbbbb", "backend-5d8f7c9b4-ccccc"}


def test_without_an_event_loop_the_targets_file_is_written_at_once(tmp_path: Path) -> None:
    store = Store(FakeClock())
    path = tmp_path / "targets.json"
    with PrometheusTargets(store, "http://127.0.0.1:8123", path):
        assert json.loads(path.read_text()) == []
        make_pod(store, "staging", "backend-1")
        assert set(read_targets(path)) == {"backend-1"}


def test_the_targets_file_must_be_one_prometheus_reads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"file_sd reads only \.json, \.yml and \.yaml files"):
        PrometheusTargets(Store(FakeClock()), "http://127.0.0.1:8123", tmp_path / "targets.txt")


# ----- the server -----

def test_generated_config(tmp_path: Path) -> None:
    fast = PrometheusServer(tmp_path / "t.json", scrape_interval=0.5).config()
    assert fast["global"] == {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "500ms"}
    slow = PrometheusServer(tmp_path / "t.json").config()
    assert slow["global"] == {"scrape_interval": "15s", "scrape_timeout": "10s", "evaluation_interval": "15s"}
    assert slow["scrape_configs"] == [{"job_name": "kubernetes-pods", "file_sd_configs": [
        {"files": [str(tmp_path / "t.json")], "refresh_interval": "5s"}]}]


async def test_a_missing_binary_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusNotInstalled, match=r"install it \(Debian/Ubuntu: `apt-get install prometheus`\)"):
        async with PrometheusServer(tmp_path / "t.json"):
            pass
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "prometheus-2.42"))
    with pytest.raises(PrometheusNotInstalled, match=f"{BINARY_ENV}=.*prometheus-2.42' is not an executable file"):
        find_prometheus_binary()


async def test_a_prometheus_that_exits_at_start_is_reported(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false is not None
    with pytest.raises(PrometheusStartError, match="prometheus exited with code 1 while starting"):
        async with PrometheusServer(tmp_path / "t.json", binary=false):
            pass


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool", path=str(Path(find_prometheus_binary()).parent))
    assert promtool is not None, "promtool (Debian package `prometheus`) is missing beside the prometheus binary"
    pod = pod_object("staging", "backend-1", env={"SIM_ERROR_RATIO": "0.12"}, started=1_764_151_200.0)
    for text in (render_metrics(pod, 1_764_151_260.0), render_metrics(pod, 1_764_151_260.0, identity_labels=True)):
        checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                                 timeout=30, check=False)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


async def test_real_prometheus_sees_the_error_ratio_and_the_slower_pod(tmp_path: Path) -> None:
    clock = ScaledClock(1.0)  # Prometheus samples in real time: the workload's clock must match it
    store = Store(clock)
    make_pod(store, "staging", "backend-5d8f7c9b4-fast",
             env={"SIM_ERROR_RATIO": "0.12", "SIM_LATENCY_MS": "100"})
    make_pod(store, "staging", "backend-5d8f7c9b4-slow",
             env={"SIM_ERROR_RATIO": "0.12", "SIM_LATENCY_MS": "180"})
    make_pod(store, "production", "backend-77f6d5c4b-other", template_hash="77f6d5c4b",
             env={"SIM_ERROR_RATIO": "0.9"})
    async with prometheus_stack(store, clock, tmp_path, scrape_interval=1.0) as stack, \
            aiohttp.ClientSession() as session:
        url = stack.prometheus.url
        await stack.prometheus.wait_for_targets(3, timeout=30)

        async def enough_samples() -> float | None:
            result = await instant_query(session, url, SAMPLES_IN_WINDOW)
            return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) >= 8 else None

        await poll(enough_samples, timeout=40, what="8 scrapes of both pods in the 15s window")

        ratio = await instant_query(session, url, ERROR_RATIO)
        assert len(ratio) == 1, ratio
        assert float(ratio[0]["value"][1]) == pytest.approx(0.12, abs=0.02), ratio

        p95 = {r["metric"]["pod"]: float(r["value"][1]) for r in await instant_query(session, url, P95_BY_POD)}
        assert set(p95) == {"backend-5d8f7c9b4-fast", "backend-5d8f7c9b4-slow"}, p95
        assert 1.5 < p95["backend-5d8f7c9b4-slow"] / p95["backend-5d8f7c9b4-fast"] < 2.2, p95

        series = await instant_query(session, url, 'up{job="kubernetes-pods"}')
        assert sorted((s["metric"]["namespace"], s["metric"]["deployment"], s["metric"]["pod"],
                       s["metric"]["pod_template_hash"], s["value"][1]) for s in series) == [
            ("production", "backend", "backend-77f6d5c4b-other", "77f6d5c4b", "1"),
            ("staging", "backend", "backend-5d8f7c9b4-fast", "5d8f7c9b4", "1"),
            ("staging", "backend", "backend-5d8f7c9b4-slow", "5d8f7c9b4", "1"),
        ]


async def test_a_stopped_prometheus_refuses_connections_until_started_again(tmp_path: Path) -> None:
    (tmp_path / "targets.json").write_text("[]")
    async with PrometheusServer(tmp_path / "targets.json", scrape_interval=1.0) as prometheus, \
            aiohttp.ClientSession() as session:
        url = prometheus.url
        assert (await instant_query(session, url, "vector(1)"))[0]["value"][1] == "1"

        await prometheus.stop()
        assert not prometheus.running
        with pytest.raises(aiohttp.ClientConnectorError) as err:
            await instant_query(session, url, "vector(1)")
        assert isinstance(err.value.os_error, ConnectionRefusedError), err.value

        await prometheus.start()
        assert prometheus.url == url, "the same address after a restart"
        assert (await instant_query(session, url, "vector(1)"))[0]["value"][1] == "1"
