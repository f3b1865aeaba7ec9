"""RuleSet: a bad file refuses only its own policies, a reload keeps a file's last good version, and
parsing happens off the event loop."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from daemon.metrics import Metrics
from daemon.rules.limits import MAX_FILE_BYTES
from daemon.rules.loader import load_file
from daemon.rulesets import RuleSet, RulesInvalid


def _policy(name: str, namespace: str = "staging", *, labels: str = "") -> str:
    return (
        f"apiVersion: rollguard.io/v1\nkind: RollbackPolicy\nmetadata:\n  name: {name}\n{labels}"
        f"spec:\n  selector: {{namespaces: [{namespace}]}}\n"
        "  signals:\n    log_errors:\n      logs: {pattern: ERROR}\n"
        "  rules:\n    - {name: errors, when: 'log_errors > 0', action: notify}\n"
    )


BROKEN = _policy("broken").replace("action: notify", "action: page")


def _refused_gauge(metrics: Metrics, file: Path) -> float | None:
    return metrics.registry.get_sample_value("rollguard_rule_files_refused", {"file": str(file)})


def test_a_bad_file_at_start_refuses_only_its_own_policies(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_policy("team-a", "a"))
    (tmp_path / "b.yaml").write_text(BROKEN)
    (tmp_path / "c.yaml").write_text(_policy("team-c", "c"))
    metrics = Metrics()
    seen: list[Mapping[str, str]] = []
    rules = RuleSet(tmp_path, metrics=metrics, on_refused=seen.append)

    rules.load()

    assert [p.name for p in rules.policies] == ["team-a", "team-c"]
    expected = {str(tmp_path / "b.yaml"): (
        f'{tmp_path / "b.yaml"}:11: spec.rules[0].action: "page" is not an action (use rollback, review or notify)'
    )}
    assert rules.refused == expected
    assert seen == [expected]
    assert _refused_gauge(metrics, tmp_path / "b.yaml") == 1.0
    assert _refused_gauge(metrics, tmp_path / "a.yaml") is None


def test_start_fails_only_when_no_file_is_valid(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(BROKEN)
    with pytest.raises(RulesInvalid) as raised:
        RuleSet(tmp_path).load()
    assert str(raised.value) == (
        f'{tmp_path / "b.yaml"}:11: spec.rules[0].action: "page" is not an action (use rollback, review or notify)'
    )


def test_a_later_file_reusing_a_policy_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_policy("backend"))
    (tmp_path / "b.yaml").write_text(_policy("backend", "production"))
    rules = RuleSet(tmp_path)
    rules.load()
    assert [(p.name, p.source.file) for p in rules.policies] == [("backend", str(tmp_path / "a.yaml"))]
    assert rules.refused == {str(tmp_path / "b.yaml"): (
        f'{tmp_path / "b.yaml"}:1: metadata.name: policy "backend" is already defined at {tmp_path / "a.yaml"}:1'
    )}


async def test_a_bad_new_version_keeps_the_last_good_version_running(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_policy("team-a", "a"))
    (tmp_path / "b.yaml").write_text(_policy("team-b", "b"))
    metrics = Metrics()
    rules = RuleSet(tmp_path, metrics=metrics)
    rules.load()

    (tmp_path / "a.yaml").write_text(_policy("team-a", "a2"))
    (tmp_path / "b.yaml").write_text(BROKEN)
    assert await rules.reload() is False

    assert [(p.name, p.selector.namespaces) for p in rules.policies] == [("team-a", ("a2",)), ("team-b", ("b",))]
    assert list(rules.refused) == [str(tmp_path / "b.yaml")]
    assert _refused_gauge(metrics, tmp_path / "b.yaml") == 1.0

    (tmp_path / "b.yaml").write_text(_policy("team-b", "b2"))
    assert await rules.reload() is True
    assert [(p.name, p.selector.namespaces) for p in rules.policies] == [("team-a", ("a2",)), ("team-b", ("b2",))]
    assert (rules.refused, _refused_gauge(metrics, tmp_path / "b.yaml")) == ({}, None)


async def test_a_file_over_the_load_budget_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_policy("team-a"))
    rules = RuleSet(tmp_path, load_budget=0.0)
    rules.load()  # at start there is nothing else to wait for; the budget guards reloads
    (tmp_path / "a.yaml").write_text(_policy("team-a", "production"))

    assert await rules.reload() is False

    expected = f"{tmp_path / 'a.yaml'}: took longer than the limit of 0s to load"
    assert rules.refused == {str(tmp_path / "a.yaml"): expected}
    assert [p.selector.namespaces for p in rules.policies] == [("staging",)]


def _file_at_the_limit() -> str:
    """A valid policy padded with labels to just under 1 MiB: the most a reload may have to parse."""
    labels, size, index = ["  labels:\n"], 0, 0
    while size < MAX_FILE_BYTES - 2_000:
        line = f"    label-{index}: {'v' * 60}\n"
        labels.append(line)
        size += len(line)
        index += 1
    return _policy("at-the-limit", labels="".join(labels))


@pytest.mark.serial  # the loop's gaps are compared with a parse's duration: both need the cores to themselves
async def test_the_event_loop_keeps_ticking_while_a_file_at_the_limit_reloads(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(_file_at_the_limit())
    assert MAX_FILE_BYTES - 2_000 < path.stat().st_size <= MAX_FILE_BYTES
    rules = RuleSet(tmp_path)
    rules.load()
    assert rules.refused == {}
    # What the loop would stall for if the file were parsed on it, on this machine (the bound is relative:
    # a slow host parses slowly and may tick late alike).
    started = time.perf_counter()
    assert not load_file(path).errors
    on_the_loop = time.perf_counter() - started
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last - 0.005)
            last = now

    # The test process's own heap (every module and fixture so far) is kept out of the collector's passes:
    # a full collection triggered by the parse's allocations would hold the GIL for as long as that heap
    # takes to walk (0.28 s once on a slow host), which is the collector's pause, not the reload's.
    # The daemon collects its oldest generation rarely (`daemon.gcpolicy`).
    gc.freeze()
    ticker = asyncio.create_task(tick())
    try:
        for _ in range(3):
            assert await rules.reload() is True
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        gc.unfreeze()
    assert len(gaps) >= 5, f"the event loop ticked only {len(gaps)} times during three reloads"
    assert max(gaps) < on_the_loop / 2, (f"the event loop stalled for {max(gaps):.3f}s during a reload; parsing the "
                                         f"file takes {on_the_loop:.3f}s")
