"""daemon.baselines.choose_stable and the `passed` memory of the state annotation."""

from __future__ import annotations

from typing import Any

from daemon.baselines import StableBaseline, choose_stable
from daemon.kube.state import AnalysisState, Passed
from daemon.measurement import SignalContext

T0 = 1_700_000_000.0
CURRENT = SignalContext(namespace="staging", deployment="backend", revision=4, pod_template_hash="h4",
                        pod_prefix="backend-h4-", labels={"app": "backend"}, rollout_started_at=T0 + 3600)


def rs(revision: int, hash_: str, created: float) -> dict[str, Any]:
    from datetime import UTC, datetime
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": f"backend-{hash_}", "labels": {"pod-template-hash": hash_},
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                         "creationTimestamp": stamp}}


# Revision 1 served 50 minutes; 2 lived a second; 3 served 9m59s and was rolled back; 4 is rolling out.
HISTORY = [rs(1, "h1", T0), rs(2, "h2", T0 + 3000), rs(3, "h3", T0 + 3001), rs(4, "h4", T0 + 3600)]


def test_the_last_passed_revision_is_the_baseline_measured_when_it_was_replaced() -> None:
    chosen = choose_stable(CURRENT, HISTORY, [Passed("h1", 1, T0 + 700)], started_at=T0 + 3600, min_age=600)
    assert isinstance(chosen, StableBaseline), chosen
    assert (chosen.ctx.revision, chosen.ctx.pod_template_hash, chosen.ctx.pod_prefix) == (1, "h1", "backend-h1-")
    assert chosen.at == T0 + 3000, "measured while revision 1 still served alone"
    assert chosen.reason == "revision 1, the last that passed its analysis"


def test_without_verdicts_short_lived_revisions_are_skipped() -> None:
    chosen = choose_stable(CURRENT, HISTORY, [], started_at=T0 + 3600, min_age=600)
    assert isinstance(chosen, StableBaseline), chosen
    assert chosen.ctx.revision == 1, "revisions 2 and 3 served less than stableMinAge"


def test_no_revision_old_enough_says_why() -> None:
    chosen = choose_stable(CURRENT, HISTORY[1:], [], started_at=T0 + 3600, min_age=3600)
    assert chosen == ("no stable revision: none passed an analysis and none of the 2 earlier revisions served "
                      "for 1h (stableMinAge)")


def test_a_passed_revision_is_remembered_into_the_next_rollout_and_survives_json() -> None:
    passed = AnalysisState(revision=1, pod_template_hash="h1", started_at=T0, phase="passed", completed_at=T0 + 60)
    nxt = passed.for_new_rollout(2, "h2", T0 + 100)
    assert nxt.passed == (Passed("h1", 1, T0 + 60),)
    assert AnalysisState.from_json(nxt.to_json(), now=T0 + 200).passed == nxt.passed
    # A ReplicaSet's copy of an older state, written before `passed` existed, still counts.
    assert AnalysisState().merged_memory([passed]).passed == (Passed("h1", 1, T0 + 60),)
