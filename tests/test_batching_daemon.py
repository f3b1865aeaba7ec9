"""The daemon batches and spreads for real: the mass_rollout scenario at a small size, end to end.

`rollguard run` (a child process, `ROLLGUARD_SPREAD_FIRST_TICK=true`, batching on by default) against
the simulated cluster and a real Prometheus; 40 Deployments are rolled at once. What a user sees:
every analysis evaluated, first ticks on whole seconds spread over the interval, and fewer requests
reaching Prometheus than queries asked (`rollguard_prometheus_queries_saved_total` grows), and the
daemon's own lag histogram over the window. The simulated cluster runs in a process of its own.
"""

from __future__ import annotations

import pytest

from bench import mass
from bench.__main__ import table


@pytest.mark.prometheus
@pytest.mark.timeout(180)
async def test_forty_simultaneous_rollouts_are_all_evaluated_with_batched_queries() -> None:
    result = await mass.run(count=40, interval=2.0, warmup_intervals=1.0, window_intervals=2.0, scrape_interval=1.0)

    assert (result["live"], result["spread_first_tick"], result["batch"]) == (40, True, True), result
    assert result["evaluations"] > 0, result
    assert result["queries_saved_per_s"] > 0, f"no query was answered by a batch: {result}"
    assert result["prom_qps"] < result["uncoalesced_qps"], result
    # The daemon's own account of the window (`/metrics`), next to the figures from its log.
    own = result["daemon_lag"]
    assert own["evaluations"] > 0, result
    assert 0 <= own["within_0.5_s"] <= own["within_1_s"] <= 1, result
    assert result["ticks_skipped_by_daemon"] >= 0, result
    assert "mass_rollout" in table({"mass_rollout": {"runs": [result]}})
