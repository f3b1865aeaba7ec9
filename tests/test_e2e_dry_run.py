"""End to end: `--dry-run` decides and tells, and writes nothing to the cluster (scenario 10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sim.demo.stack import running_stack
from tests.e2ekit import (
    RULES,
    all_slack_blocks_text,
    deploy,
    deployment,
    events_of,
    eventually,
    image_of,
    revision_of,
    rollout_history,
    rollout_status,
    serving_v1,
    slack_texts,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]


async def test_dry_run_says_it_would_roll_back_and_writes_nothing(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES, dry_run=True) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

        await eventually(lambda: any("Would roll back staging/backend from revision 2" in t
                                     for t in slack_texts(stack)), timeout=60,
                         what="Slack to say rollguard would roll back", stack=stack)
        await asyncio.sleep(2)  # two evaluation intervals: room for a wrong write to show
        assert image_of(stack) == "backend:v2", "dry run must not roll back"
        history = rollout_history(await stack.kubectl("rollout", "history", "deployment/backend", "-n", "staging"))
        assert history == ["1", "2"], history
        assert events_of(stack) == [], f"dry run must not record Events: {events_of(stack)}"
        annotations = deployment(stack)["metadata"].get("annotations") or {}
        assert [k for k in annotations if k.startswith("rollguard.io/")] == [], annotations
        describe = await stack.kubectl("describe", "deployment/backend", "-n", "staging")
        assert "rollguard" not in describe, describe
        texts = "\n".join(slack_texts(stack))
        assert "[dry-run]" in texts, texts


async def test_a_dry_run_replica_restarted_after_a_deploy_still_judges_it(tmp_path: Path) -> None:
    # In dry-run nothing is written, so no state annotation tells a restarted replica which rollouts it
    # had seen: a rollout that completed while it was down is judged like one in a gap of a normal run,
    # not taken for one from before rollguard was installed (fault schedule seed 69).
    async with running_stack(workdir=tmp_path, rules_dir=RULES, dry_run=True) as stack:
        await serving_v1(stack)
        await stack.stop_daemon()
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)
        await rollout_status(stack)  # complete while the daemon is down
        await stack.start_daemon()
        await eventually(lambda: any("Would roll back staging/backend from revision 2" in t
                                     for t in slack_texts(stack)), timeout=60,
                         what="Slack to say rollguard would roll back revision 2", stack=stack)
        assert image_of(stack) == "backend:v2", "dry run must not roll back"
        assert events_of(stack) == [], f"dry run must not record Events: {events_of(stack)}"


async def test_a_dry_run_reviews_a_template_it_would_have_rolled_back_when_it_is_applied_again(tmp_path: Path) -> None:
    # Re-applying revision 2's template re-uses its ReplicaSet, exactly as `kubectl rollout undo` does. A
    # rollguard that acts would have rolled revision 2 back and remembers it (the template comes back
    # for review); in dry-run it must remember what it would have rolled back, or it follows the bad
    # template as someone's undo, unjudged and unannounced (fault schedule seed 153).
    async with running_stack(workdir=tmp_path, rules_dir=RULES, dry_run=True) as stack:
        await serving_v1(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: any("Would roll back staging/backend from revision 2" in t
                                     for t in slack_texts(stack)), timeout=60,
                         what="Slack to say rollguard would roll back revision 2", stack=stack)
        await deploy(stack, "backend:v3")
        await eventually(lambda: revision_of(stack) == 3, timeout=30, what="revision 3 to start", stack=stack)
        await rollout_status(stack)
        await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
        await eventually(lambda: revision_of(stack) == 4, timeout=30, what="revision 2's template again", stack=stack)
        await eventually(lambda: any("Review a rollback of staging/backend revision 4" in t
                                     for t in slack_texts(stack)), timeout=60,
                         what="a review of the template applied again", stack=stack)
        texts = all_slack_blocks_text(stack)
        assert "followed, not analysed" not in texts, texts
        assert "would have been rolled back (dry run) by rollguard before (revision 2)" in texts, texts
        assert image_of(stack) == "backend:v2", "dry run must not roll back"
        assert events_of(stack) == [], f"dry run must not record Events: {events_of(stack)}"
