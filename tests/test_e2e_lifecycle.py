"""End to end: the lifecycle's promises in the sequences that used to end silently wrong.

Each test is one finding of the lifecycle review, on the simulated cluster with the daemon, the
local Slack and PagerDuty, and no Prometheus (the policies here use HTTP checks and pod logs, so a
rollback is quick and certain). What is asserted is what an SRE sees: the Deployment's template and
history, the Jobs, the Events, the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.kube.client import MERGE_PATCH, KubeClient, api_path
from daemon.kube.rollout_state import rollout_status as status_of
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import Stack, running_stack
from sim.resources import EVENTS, JOBS, REPLICASETS
from tests.e2ekit import (
    all_slack_blocks_text,
    current_hash,
    deploy,
    deployment,
    env,
    event_reasons,
    events_of,
    eventually,
    image_of,
    revision_of,
    rollguard_cli,
    rollout_history,
    rollout_status,
    serving_v1,
    slack_thread_for,
    wait_event,
)

pytestmark = [pytest.mark.long, pytest.mark.timeout(180)]

DATA = Path(__file__).parent / "data" / "e2e"
HEALTH = DATA / "rules-health"
HEALTH_JOB = DATA / "rules-health-job"
REVIEW_THEN_ROLLBACK = DATA / "rules-review-then-rollback"
BAD = {"SIM_HEALTHY": "false"}


@contextlib.asynccontextmanager
async def lifecycle_stack(tmp_path: Path, rules: Path, **kwargs: Any) -> AsyncIterator[Stack]:
    async with running_stack(workdir=tmp_path, rules_dir=rules, with_prometheus=False, **kwargs) as stack:
        await stack.apply(backend_service())
        yield stack


def jobs(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.cluster.store.list_objects(JOBS, "staging")[0])


def pages(stack: Stack, revision: int) -> list[dict[str, Any]]:
    """PagerDuty events about one revision's rollout."""
    return [e for e in stack.pagerduty.events if e.get("dedup_key") == f"rollguard/staging/backend/{revision}"]


def page_summaries(stack: Stack, revision: int) -> str:
    return "\n".join(str((e.get("payload") or {}).get("summary", "")) for e in pages(stack, revision))


async def test_a_harmless_write_racing_the_undo_does_not_drop_the_rollback(tmp_path: Path) -> None:
    """Finding 1: any write between the undo's read and its PATCH (a status update, an HPA, a GitOps
    annotation) failed the resourceVersion test and ended the analysis with the bad revision live.
    Here a client writes the Deployment a few hundred times a second while the rollback happens."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        stop = asyncio.Event()
        writes = 0

        async def touch() -> None:
            nonlocal writes
            async with await KubeClient.connect(stack.cluster.kubeconfig) as kube:
                path = api_path("apps/v1", "deployments", "staging", "backend")
                while not stop.is_set():
                    await kube.patch(path, {"metadata": {"annotations": {"example.com/touched": str(writes)}}},
                                     content_type=MERGE_PATCH)
                    writes += 1
                    await asyncio.sleep(0.002)

        toucher = asyncio.create_task(touch())
        try:
            await deploy(stack, "backend:v2", **BAD)
            await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                             what="the rollback despite hundreds of writes a second to the Deployment")
        finally:
            stop.set()
            await toucher
        assert writes > 100, writes
        await wait_event(stack, "RolledBack")
        reasons = event_reasons(stack)
        assert "RollbackFenced" not in reasons, reasons
        assert "RollbackSkipped" not in reasons, reasons
        assert rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")) \
            == ["2", "3"]


async def test_a_restart_during_the_pre_rollback_job_adopts_it_and_undoes_once(tmp_path: Path) -> None:
    """Finding 2a: a restart while the downgrade Job ran started a second Job."""
    async with lifecycle_stack(tmp_path, HEALTH_JOB) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_RUN_SECONDS="8", **BAD)
        await eventually(lambda: len(jobs(stack)) == 1, timeout=60, stack=stack, what="the pre-rollback Job")
        await stack.stop_daemon(kill=True)
        assert image_of(stack) == "backend:v2", "the restart must come while the Job runs"
        await stack.start_daemon()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack, what="the rollback")
        assert [j["metadata"]["name"] for j in jobs(stack)] == [f"backend-rollback-r2-{_hash_of(stack, 2)}"]
        await wait_event(stack, "RolledBack")
        assert event_reasons(stack).count("RolledBack") == 1, event_reasons(stack)
        assert rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging")) \
            == ["2", "3"]


async def test_no_job_runs_when_there_is_nothing_to_roll_back_to(tmp_path: Path) -> None:
    """Finding 2c: on revision 1 the downgrade Job ran, then the rollback failed ("no rollout history")."""
    async with lifecycle_stack(tmp_path, HEALTH_JOB) as stack:
        await deploy(stack, "backend:v1", **BAD)
        failed = await wait_event(stack, "RollbackFailed", timeout=60)
        assert "no rollout history" in failed["message"], failed
        assert jobs(stack) == [], "the downgrade must not run when no rollback can follow it"
        await eventually(lambda: bool(pages(stack, 1)), timeout=15, stack=stack, what="a page")
        assert "no rollout history" in page_summaries(stack, 1) or "failed" in page_summaries(stack, 1)


async def test_a_newer_deploy_during_the_job_fences_the_rollback_and_pages(tmp_path: Path) -> None:
    """Finding 2b and 1's second half: a deploy landing during the Job left the schema downgraded and
    the app not, and the fenced rollback was a Normal Event that told nobody."""
    async with lifecycle_stack(tmp_path, HEALTH_JOB) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_RUN_SECONDS="10", **BAD)
        await eventually(lambda: len(jobs(stack)) == 1, timeout=60, stack=stack, what="the pre-rollback Job")
        await deploy(stack, "backend:v3")
        fenced = await wait_event(stack, "RollbackFenced", timeout=60)
        assert "revision 3" in fenced["message"], fenced
        await eventually(lambda: "superseded by revision 3" in page_summaries(stack, 2), timeout=15, stack=stack,
                         what="a page saying what superseded the rollback")
        assert image_of(stack) == "backend:v3", "a newer deploy is never undone"
        assert len(jobs(stack)) == 1


async def test_a_second_deploy_during_the_job_still_supersedes_the_first_ones_analysis(tmp_path: Path) -> None:
    """Chaos seed 144: while a rollback's Job ran, two deploys landed. The first one's analysis was
    never cancelled when the second arrived (the rollback in progress was taken for its own), so it
    went on judging a revision long replaced and, 20 s later, asked a human to review it."""
    async with lifecycle_stack(tmp_path, HEALTH_JOB) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_RUN_SECONDS="10", **BAD)
        await eventually(lambda: len(jobs(stack)) == 1, timeout=60, stack=stack, what="the pre-rollback Job")
        await deploy(stack, "backend:v3")
        await eventually(lambda: "AnalysisStarted" in [e["reason"] for e in events_of(stack)
                                                       if "backend:v3" in e["message"]],
                         timeout=30, stack=stack, what="revision 3's analysis to start")
        await deploy(stack, "backend:v4")
        await eventually(lambda: any(e["reason"] == "AnalysisSuperseded" and "Revision 4 started" in e["message"]
                                     for e in events_of(stack)),
                         timeout=30, stack=stack, what="revision 3's analysis to end, superseded by revision 4")
        fenced = await wait_event(stack, "RollbackFenced", timeout=60)
        assert "revision 4" in fenced["message"], fenced
        await rollout_status(stack)
        assert image_of(stack) == "backend:v4", "a newer deploy is never undone"


async def test_a_deadline_passed_while_no_daemon_ran_is_acted_on_at_start(tmp_path: Path) -> None:
    """Finding 6a: a ProgressDeadlineExceeded that happened while no replica led never triggered
    `onFailure` or its page."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await stack.stop_daemon()
        await stack.apply(backend_deployment("backend:v2-never-ready", env=env(), progress_deadline=4))
        await eventually(lambda: status_of(deployment(stack)).failed, timeout=60, what="the deadline to pass")
        await stack.start_daemon()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="onFailure: rollback, after the restart")
        await wait_event(stack, "RolloutFailed")
        await eventually(lambda: bool(pages(stack, 2)), timeout=15, stack=stack, what="the page")


async def test_a_rollout_that_completed_while_no_daemon_ran_is_still_judged(tmp_path: Path) -> None:
    """Finding 6b: a rollout that completed during the gap was never analysed."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await stack.stop_daemon()
        await deploy(stack, "backend:v2", **BAD)
        await rollout_status(stack)
        await stack.start_daemon()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="the unjudged revision to be judged and rolled back")


async def test_a_pending_review_is_analysed_again_after_a_restart(tmp_path: Path) -> None:
    """Finding 6c: after a restart a rollout waiting for review was no longer analysed, so a later
    rollback rule could never fire."""
    async with lifecycle_stack(tmp_path, REVIEW_THEN_ROLLBACK) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_LOG_ERROR_RATIO="0.5", SIM_LOG_RATE="5")
        await wait_event(stack, "ReviewRequested", timeout=60)
        await stack.stop_daemon()
        assert image_of(stack) == "backend:v2", "the restart must come before the rollback rule's for: ends"
        await stack.start_daemon()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="the later rollback rule to fire after the restart")
        await wait_event(stack, "RolledBack")


async def test_an_undo_whose_announcement_was_lost_in_a_crash_is_announced_after_restart(tmp_path: Path) -> None:
    """Finding 6d: a crash right after the undo lost the "rolled back" page. The crash is reproduced
    by writing what the undo's own patch leaves behind (the template undone, the state saying
    `rolling-back`) while no daemon runs; the state is in the first version's format, as an upgrade
    from the previous release would find it."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await stack.stop_daemon()
        await deploy(stack, "backend:v2", **BAD)
        await rollout_status(stack)
        bad_hash = current_hash(stack)
        await stack.kubectl("rollout", "undo", "deployment/backend", "-n", "staging")
        state = {"v": 1, "rollout": {"revision": 2, "hash": bad_hash, "startedAt": 1.0}, "phase": "rolling-back",
                 "rules": {}, "decision": {"action": "rollback_started", "rule": "health-down", "at": 2.0,
                                           "reason": "health-down: !health.ok held for 2s"},
                 "completedAt": None, "rolledBack": [{"hash": bad_hash, "revision": 2, "at": 2.0}],
                 "rollbackTimes": [2.0]}
        await stack.kubectl("annotate", "deployment/backend", "-n", "staging", "--overwrite",
                            f"rollguard.io/state={json.dumps(state)}")
        await stack.start_daemon()
        await wait_event(stack, "RollbackCompleted", timeout=60)
        await eventually(lambda: "Rolled back staging/backend from revision 2" in all_slack_blocks_text(stack),
                         timeout=15, stack=stack, what="the lost 'rolled back' message")
        assert "health-down" in all_slack_blocks_text(stack), "the announcement says which rule decided"
        await eventually(lambda: any(e["event_action"] == "trigger" for e in pages(stack, 2)), timeout=15,
                         stack=stack, what="the lost rollback page")
        assert image_of(stack) == "backend:v1"


async def test_a_reapplied_rolled_back_template_can_be_approved_and_rolled_back(tmp_path: Path) -> None:
    """Finding 7: a re-applied rolled-back template asked for review, then `rollguard approve` was
    ignored ("no review is pending for revision 4") and still exited 0."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", **BAD)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack, what="the rollback")
        await wait_event(stack, "RollbackCompleted", timeout=30)
        await deploy(stack, "backend:v2", **BAD)  # as a GitOps self-heal would re-apply it
        await eventually(lambda: event_reasons(stack).count("ReviewRequested") == 1, timeout=60, stack=stack,
                         what="a review of the re-applied template")
        revision = revision_of(stack)
        assert revision == 4, revision
        code, out, err = await rollguard_cli("approve", "staging/backend", "--revision", str(revision),
                                             "--by", "alice", "--kubeconfig", str(stack.cluster.kubeconfig))
        assert code == 0, (out, err)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="the approved rollback")

        def rolled() -> list[str]:
            return [e["message"] for e in stack.cluster.store.list_objects(EVENTS, "staging")[0]
                    if e.get("reason") == "RolledBack"]

        # The Event follows the undo's PATCH: the image can change a moment before it is recorded.
        await eventually(lambda: any("alice" in m for m in rolled()), timeout=15, stack=stack,
                         what=f"a RolledBack Event naming the approver (have {rolled()})")
        assert "ApprovalIgnored" not in event_reasons(stack)


async def test_a_template_reapplied_while_no_replica_watched_is_still_reviewed(tmp_path: Path) -> None:
    """Fault schedule seed 21: the rolled-back template came back while the leader was down; its
    successor took the completed, re-used ReplicaSet for an undo back to a judged revision and said
    nothing about a build it had rolled back itself."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", **BAD)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack, what="the rollback")
        await wait_event(stack, "RollbackCompleted", timeout=30)
        await stack.stop_daemon(kill=True)
        await deploy(stack, "backend:v2", **BAD)
        await eventually(lambda: revision_of(stack) == 4, timeout=30, what="the re-applied revision", stack=stack)
        await rollout_status(stack)
        await stack.start_daemon()
        await eventually(lambda: event_reasons(stack).count("ReviewRequested") == 1, timeout=60, stack=stack,
                         what="a review of the re-applied template")
        await eventually(lambda: any(e["event_action"] == "trigger" for e in pages(stack, 4)), timeout=15,
                         stack=stack, what="the review's page")
        assert image_of(stack) == "backend:v2", "a re-applied template is reviewed, not rolled back again"


async def test_a_reapplied_template_under_review_stays_under_review_after_a_restart(tmp_path: Path) -> None:
    """Fault schedule seed 103: the next process resumed the review's analysis without its cap and
    rolled the re-applied template back again, though only a human decides that."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", **BAD)
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack, what="the rollback")
        await wait_event(stack, "RollbackCompleted", timeout=30)
        await deploy(stack, "backend:v2", **BAD)
        await eventually(lambda: event_reasons(stack).count("ReviewRequested") == 1, timeout=60, stack=stack,
                         what="a review of the re-applied template")
        await stack.stop_daemon(kill=True)
        await stack.start_daemon()
        # The failing health check would roll back within a few evaluations; none may.
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            assert image_of(stack) == "backend:v2", "the re-applied template was rolled back without a human"
            await asyncio.sleep(0.2)
        assert event_reasons(stack).count("RolledBack") == 1, event_reasons(stack)


async def test_a_rollback_whose_own_rollout_fails_pages(tmp_path: Path) -> None:
    """Finding 8: a rollback whose own rollout failed was only logged; the service may be down."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        # Revision 1 never becomes ready (its rollout fails; there is nothing to roll back to, which
        # pages); revision 2 comes up but its health check fails, so it is rolled back to revision 1 —
        # whose rollout fails again.
        await stack.apply(backend_deployment("backend:v1-never-ready", env=env(), progress_deadline=5))
        await eventually(lambda: status_of(deployment(stack)).failed, timeout=60, what="revision 1 to fail")
        await stack.apply(backend_deployment("backend:v2", env=env(SIM_READY_DELAY="0.2", **BAD),
                                             progress_deadline=5))
        await eventually(lambda: image_of(stack) == "backend:v1-never-ready", timeout=60, stack=stack,
                         what="the rollback of revision 2")
        await wait_event(stack, "RollbackRolloutFailed", timeout=60)
        await eventually(lambda: "not coming up" in page_summaries(stack, 2), timeout=15, stack=stack,
                         what="a critical page about the failing rollback")
        assert any((e.get("payload") or {}).get("severity") == "critical" for e in pages(stack, 2))


async def test_a_superseded_analysis_is_shown_as_superseded(tmp_path: Path) -> None:
    """Finding 11: an analysis superseded by a newer deploy stayed `analysing` in /api/v1/analyses."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await deploy(stack, "backend:v1")
        await eventually(lambda: "AnalysisStarted" in event_reasons(stack), timeout=30, stack=stack,
                         what="revision 1's analysis")
        await deploy(stack, "backend:v2")
        await wait_event(stack, "AnalysisSuperseded", timeout=30)

        async def revision_1() -> dict[str, Any] | None:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{stack.daemon_url}/api/v1/analyses") as resp:
                body = await resp.json()
            return next((a for a in body["analyses"] if a["revision"] == 1), None)

        entry = await revision_1()
        assert entry is not None
        assert entry["phase"] == "superseded", entry


def _hash_of(stack: Stack, revision: int) -> str:
    for rs in stack.cluster.store.list_objects(REPLICASETS, "staging")[0]:
        meta = rs["metadata"]
        if (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision") == str(revision):
            return str(meta["labels"]["pod-template-hash"])
    raise AssertionError(f"no ReplicaSet has revision {revision}")


async def test_a_restart_mid_rollout_continues_the_same_slack_thread(tmp_path: Path) -> None:
    """The thread's root is remembered on the Deployment: a restarted daemon replies in it."""
    async with lifecycle_stack(tmp_path, REVIEW_THEN_ROLLBACK) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_LOG_ERROR_RATIO="0.5", SIM_LOG_RATE="5")
        await wait_event(stack, "ReviewRequested", timeout=60)
        await eventually(lambda: "rollguard.io/slack-threads" in deployment(stack)["metadata"]["annotations"],
                         timeout=15, stack=stack, what="the thread to be remembered on the Deployment")
        await stack.stop_daemon()
        await stack.start_daemon()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack, what="the rollback")
        await wait_event(stack, "RolledBack")
        await eventually(lambda: any("Rolled back" in m.text for m in slack_thread_for(stack, 2)), timeout=15,
                         stack=stack, what="the rollback message in revision 2's thread")
        roots = [m for m in stack.slack.roots() if m.text.startswith("staging/backend revision 2:")]
        assert len(roots) == 1, [m.text for m in roots]


async def test_an_invalid_state_annotation_is_reported_and_the_rollout_judged_afresh(tmp_path: Path) -> None:
    """Finding 5: `"decision": "x"` in the state made the rollout never analysed again (AttributeError)."""
    async with lifecycle_stack(tmp_path, HEALTH) as stack:
        await serving_v1(stack)
        await stack.stop_daemon()
        await deploy(stack, "backend:v2", **BAD)
        await rollout_status(stack)
        forged = {"v": 1, "rollout": {"revision": 2, "hash": current_hash(stack), "startedAt": 1.0},
                  "phase": "analysing", "rules": {"version": 9}, "decision": "x", "completedAt": None,
                  "rolledBack": [], "rollbackTimes": [1e300]}
        await stack.kubectl("annotate", "deployment/backend", "-n", "staging", "--overwrite",
                            f"rollguard.io/state={json.dumps(forged)}")
        await stack.start_daemon()
        invalid = await wait_event(stack, "InvalidState", timeout=30)
        assert "decision must be an object" in invalid["message"], invalid
        assert invalid["type"] == "Warning"
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, stack=stack,
                         what="the rollout judged as if seen for the first time")
