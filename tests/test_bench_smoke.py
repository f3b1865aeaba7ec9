"""The benchmarks (`make bench`) still work: each scenario once, at the smallest size, in seconds.

Only the shape of the results and the outcomes a user would see are checked (the rollback happened,
every analysis ran, the undo sent the requests kubectl would): never a timing — the machine is shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import alert_push, analyses, detection, rollback_cost, rules_cost, scale, sim_scale
from bench.__main__ import main, speed_line, table
from bench.calibrate import host_speed


async def test_rules_cost_times_every_input_case() -> None:
    result = rules_cost.run(iterations=20, repeats=1)

    assert sorted(result["cases"]) == ["bad", "healthy", "no_data"], result
    assert result["rules"] == 4, "the shipped policy has four rules"
    assert all(case["us_per_rule"] > 0 for case in result["cases"].values()), result
    assert "rules_cost" in table({"rules_cost": result})


@pytest.mark.kubectl
async def test_rollback_cost_undoes_both_twins_with_the_same_requests_as_kubectl() -> None:
    outcome = await rollback_cost.run(repetitions=2)

    assert outcome["rollguard_undo_s"]["n"] == 2, outcome
    assert outcome["kubectl_rollout_undo_s"]["n"] == 2, outcome
    assert outcome["requests"]["rollguard"] == ["get deployments", "list replicasets", "patch deployments"], outcome
    assert outcome["requests"]["kubectl"][-1] == "patch deployments", outcome
    assert "kubectl rollout undo" in table({"rollback_cost": outcome})


async def test_scale_measures_the_daemon_process_at_each_size() -> None:
    result = await scale.run(sizes=[30], idle_seconds=0.5)

    assert [row["deployments"] for row in result["rows"]] == [0, 30], result
    for row in result["rows"]:
        assert row["rss_mib"] > 0, row
        assert row["ready_s"] > 0, row
    assert "30 Deployments" in table({"scale": result})


@pytest.mark.prometheus
@pytest.mark.timeout(180)
async def test_analyses_run_concurrently_and_are_all_evaluated() -> None:
    result = await analyses.run(counts=[3, 6], interval=1.0, warmup_intervals=1.0, window_intervals=2.0,
                                scrape_interval=1.0)

    assert [stage["analyses"] for stage in result["stages"]] == [3, 6], result
    for stage in result["stages"]:
        assert stage["live"] == stage["analyses"], stage
        assert stage["analyses_evaluated_in_window"] == stage["analyses"], stage
        assert stage["lag_s"]["n"] > 0, stage
    assert "analyses: lag" in table({"analyses": result})


@pytest.mark.prometheus
@pytest.mark.kubectl
@pytest.mark.timeout(180)
async def test_detection_sees_a_bad_deploy_rolled_back() -> None:
    result = await detection.run(runs=1, interval=1.0)

    assert [run["image"] for run in result["runs"]] == ["backend-1:bad"], result
    assert result["to_patch_s"]["n"] == 1, result
    assert "detection" in table({"detection": result})


async def test_sim_scale_creates_lists_and_watches_every_deployment(tmp_path: Path) -> None:
    result = await sim_scale.run(sizes=[30], workdir=tmp_path, per_namespace=10)
    row = result["rows"][0]
    assert (row["deployments"], row["listed_deployments"], row["pods"]) == (30, 30, 90)
    assert "sim_scale" in table({"sim_scale": result})


def test_main_prints_json_and_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"

    code = main(["--only", "rules_cost", "--rules-iterations", "10", "--json", str(out)])

    assert code == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text())
    assert list(printed["results"]) == ["rules_cost"], printed
    assert printed["machine"]["nproc"] >= 1, printed["machine"]
    for when in ("speed_before", "speed_after"):  # the host's speed, so figures of two hosts can be compared
        speed = printed["machine"][when]
        assert all(speed[k] > 0 for k in ("python_loop_s", "json_decode_s", "json_decode_kept_s")), speed
    assert "host speed (bench/calibrate.py, lower is faster) — before: loop " in captured.err, captured.err
    assert printed["command"].startswith(".venv/bin/python -m bench --only rules_cost"), printed["command"]


def test_a_host_speed_that_cannot_be_read_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))

    speed = host_speed(rounds=1)

    assert set(speed) == {"error"}, speed
    assert "no-python" in speed["error"], speed
    assert "before: FileNotFoundError" in speed_line({"speed_before": speed}), speed_line({"speed_before": speed})


@pytest.mark.prometheus
@pytest.mark.kubectl
@pytest.mark.timeout(180)
async def test_alert_push_times_the_webhook_to_the_undo_patch() -> None:
    result = await alert_push.run(runs=1)

    [run] = result["runs"]
    assert run["image"] == "backend-1:bad", result
    assert run["webhook_status"] == 200, result
    # The first webhook for the bad pods woke the analysis that rolled back.
    assert json.loads(run["daemon_answer"])["woke"] >= 1, result
    assert result["to_patch_s"]["n"] == 1, result
    assert "webhook arrives → rollback PATCH" in table({"alert_push": result})
