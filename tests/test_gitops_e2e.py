"""End to end: rollbacks of Deployments that a self-healing GitOps tool applies (Argo CD, Flux stand-ins).

The daemon, the simulated cluster, the local PagerDuty, and `sim.gitops` applying `backend` from a
fake Git repository. Revision 1 is healthy; the bad revision 2 comes from "Git" (`/health` answers 503).

- `gitops: undo` shows the problem: the stand-in re-applies the bad template within its self-heal delay;
  rollguard recognises it, does not undo again (no loop), pages once, and `rollguard approve` works.
- `gitops: suspend`: the owner's sync is suspended before the undo, the rollback sticks for several
  self-heal periods, the page names the Git revision and `rollguard resume`; resume refuses while Git
  still holds the bad revision, and after the revert restores the exact sync policy / `suspend: false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.actions import Actions
from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import Stack, running_stack
from sim.gitops import APPLICATIONS, GITREPOSITORIES, KUSTOMIZATIONS, FakeGit, GitOpsControllers, running_gitops
from sim.resources import DEPLOYMENTS, EVENTS
from tests.e2ekit import env, event_reasons, eventually, image_of, revision_of, rollguard_cli, rollout_status

pytestmark = [pytest.mark.long, pytest.mark.timeout(120)]

HEALTH_RULES = Path(__file__).parent / "data" / "e2e" / "rules-health" / "backend.yaml"
REPO = "https://git.example/shop/deploy.git"
SELF_HEAL = 1.5
SYNC_POLICY = {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["CreateNamespace=true"],
               "retry": {"limit": 2}}


@contextlib.asynccontextmanager
async def gitops_stack(tmp_path: Path, mode: str, *, argocd_namespace: str = "argocd",
                       ) -> AsyncIterator[tuple[Stack, FakeGit, GitOpsControllers]]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "backend.yaml").write_text(HEALTH_RULES.read_text() + f"  gitops: {mode}\n")
    async with running_stack(workdir=tmp_path, rules_dir=rules, with_prometheus=False,
                             start_daemon=False) as stack:
        stack.settings = replace(stack.settings, argocd_namespace=argocd_namespace)
        await stack.start_daemon()
        await stack.apply(backend_service())
        for namespace in sorted({"argocd", "flux-system", argocd_namespace}):
            await stack.kubectl("create", "namespace", namespace)
        git = FakeGit()
        async with running_gitops(stack.cluster.store, stack.cluster.clock, git, self_heal_delay=SELF_HEAL,
                                  tick=0.2) as controllers:
            yield stack, git, controllers


def commit(git: FakeGit, path: str, image: str, **sim_env: str) -> str:
    return git.commit(REPO, path, [backend_deployment(image, env=env(**sim_env), change_cause=f"git {image}")])


def owner(stack: Stack, rt: Any, namespace: str, name: str) -> dict[str, Any]:
    found = stack.cluster.store.peek(rt, namespace, name)
    assert found is not None, f"{rt.kind} {namespace}/{name} is missing"
    return found


def at_revision(stack: Stack, revision: int) -> bool:
    return stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") is not None and revision_of(stack) == revision


def page_summaries(stack: Stack) -> list[str]:
    return [str((e.get("payload") or {}).get("summary", "")) for e in stack.pagerduty.events
            if e.get("event_action") == "trigger"]


def undo_count(stack: Stack) -> int:
    """How many times rollguard undid the Deployment (its RolledBack Events)."""
    return sum(1 for e in stack.cluster.store.list_objects(EVENTS, "staging")[0] if e.get("reason") == "RolledBack")


async def application(stack: Stack, namespace: str = "argocd") -> None:
    await stack.apply({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                       "metadata": {"name": "backend", "namespace": namespace},
                       "spec": {"project": "default", "source": {"repoURL": REPO, "path": "staging/backend",
                                                                 "targetRevision": "HEAD"},
                                "destination": {"server": "https://kubernetes.default.svc", "namespace": "staging"},
                                "syncPolicy": SYNC_POLICY}})


async def test_undo_mode_under_self_heal_pages_once_and_does_not_loop(tmp_path: Path) -> None:
    async with gitops_stack(tmp_path, "undo") as (stack, git, controllers):
        commit(git, "staging/backend", "backend:v1")
        await application(stack)
        await eventually(lambda: at_revision(stack, 1), timeout=20, what="Argo CD to apply revision 1", stack=stack)
        await rollout_status(stack)
        bad = commit(git, "staging/backend", "backend:v2", SIM_HEALTHY="false")
        await eventually(lambda: undo_count(stack) == 1, timeout=40, what="rollguard to undo revision 2", stack=stack)
        # Self-heal puts the bad template back; rollguard recognises it and asks a human, once.
        await eventually(lambda: "ReviewRequested" in event_reasons(stack), timeout=30,
                         what="the re-applied template to be reviewed", stack=stack)
        assert image_of(stack) == "backend:v2"
        quiet_until = time.monotonic() + 5 * SELF_HEAL
        await eventually(lambda: time.monotonic() > quiet_until, timeout=30, what="several self-heal periods")
        assert undo_count(stack) == 1, "rollguard must not undo a re-applied template again (flapping)"
        assert [a for a in controllers.applied if a[2] == bad] == [("Application", "argocd/backend", bad)] * 2
        reviews = [s for s in page_summaries(stack) if "re-applied the template rollguard rolled back" in s]
        assert len(reviews) == 1, page_summaries(stack)
        assert reviews[0] == (
            "[staging/backend rev 4] Review a rollback of staging/backend revision 4: Argo CD Application "
            "argocd/backend re-applied the template rollguard rolled back (revision 2): rollguard does not undo it "
            "again. Revert it in Git, or approve below to roll back once more."), reviews[0]
        assert image_of(stack) == "backend:v2"

        # The review can be approved: rollguard rolls back once more (and, in undo mode, Argo CD again re-applies).
        code, _, err = await rollguard_cli("approve", "staging/backend", "--kubeconfig",
                                             str(stack.cluster.kubeconfig))
        assert code == 0, err
        await eventually(lambda: undo_count(stack) == 2, timeout=30, what="the approved rollback", stack=stack)


async def test_suspend_mode_makes_the_rollback_stick_and_resume_restores_the_sync_policy(tmp_path: Path) -> None:
    async with gitops_stack(tmp_path, "suspend") as (stack, git, _):
        commit(git, "staging/backend", "backend:v1")
        await application(stack)
        await eventually(lambda: at_revision(stack, 1), timeout=20, what="Argo CD to apply revision 1", stack=stack)
        await rollout_status(stack)
        bad = commit(git, "staging/backend", "backend:v2", SIM_HEALTHY="false")
        await eventually(lambda: undo_count(stack) == 1, timeout=40, what="rollguard to undo revision 2", stack=stack)
        app = owner(stack, APPLICATIONS, "argocd", "backend")
        assert app["spec"]["syncPolicy"] == {"syncOptions": ["CreateNamespace=true"], "retry": {"limit": 2}}
        assert json.loads(app["metadata"]["annotations"]["rollguard.io/suspended-sync-policy"]) == SYNC_POLICY
        assert app["metadata"]["annotations"]["rollguard.io/suspended-revision"] == bad

        sticks_until = time.monotonic() + 5 * SELF_HEAL
        await eventually(lambda: time.monotonic() > sticks_until, timeout=30, what="several self-heal periods")
        assert image_of(stack) == "backend:v1", "the rollback must stick while sync is suspended"
        assert undo_count(stack) == 1
        started = [e["message"] for e in stack.cluster.store.list_objects(EVENTS, "staging")[0]
                   if e.get("reason") == "AnalysisStarted"]
        assert started[-1] == (
            "Rollout of staging/backend revision 2 started: Policy backend-health analyses it; image backend:v2. "
            "Applied by Argo CD Application argocd/backend (annotation argocd.argoproj.io/tracking-id)."), started
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{stack.settings.http_listen.port}/api/v1/analyses") as response:
            analyses = (await response.json())["analyses"]
        assert {json.dumps(a.get("gitops"), sort_keys=True) for a in analyses} == {json.dumps(
            {"tool": "Argo CD", "kind": "Application", "namespace": "argocd", "name": "backend",
             "via": "annotation argocd.argoproj.io/tracking-id"}, sort_keys=True)}, analyses
        rolled_back = [s for s in page_summaries(stack) if "Rolled back staging/backend" in s]
        assert len(rolled_back) == 1, page_summaries(stack)
        text = rolled_back[0]
        assert (f"Rolled back in the cluster; Argo CD Application argocd/backend is suspended. Revert Git revision "
                f"{bad} in {REPO}/staging/backend and resume sync with `rollguard resume staging/backend`") in text, \
            text

        # Resume refuses while Git still holds the bad revision.
        kubeconfig = str(stack.cluster.kubeconfig)
        code, out, err = await rollguard_cli("resume", "staging/backend", "--kubeconfig", kubeconfig)
        assert (code, err.strip()) == (1, (
            f"rollguard resume: Git still holds revision {bad}, the one rollguard rolled back: resuming Argo CD "
            "Application argocd/backend would re-apply it. Revert it in Git first (or pass --force)")), out

        reverted = commit(git, "staging/backend", "backend:v1")
        await eventually(lambda: owner(stack, APPLICATIONS, "argocd", "backend")["status"]["sync"]["revision"]
                         == reverted, timeout=10, what="Argo CD to see the revert", stack=stack)
        code, out, err = await rollguard_cli("resume", "staging/backend", "--kubeconfig", kubeconfig)
        assert code == 0, err
        assert out.strip() == (f"Argo CD Application argocd/backend: sync policy restored (Git at {reverted}); it "
                               "owns staging/backend again")
        app = owner(stack, APPLICATIONS, "argocd", "backend")
        assert app["spec"]["syncPolicy"] == SYNC_POLICY
        assert not any(k.startswith("rollguard.io/") for k in app["metadata"].get("annotations") or {}), app
        await eventually(lambda: owner(stack, APPLICATIONS, "argocd", "backend")["status"]["sync"]["status"]
                         == "Synced", timeout=10, what="Argo CD to be in sync again", stack=stack)
        assert image_of(stack) == "backend:v1"


async def test_flux_kustomization_is_suspended_and_resumed(tmp_path: Path) -> None:
    async with gitops_stack(tmp_path, "suspend") as (stack, git, _):
        commit(git, "./staging/backend", "backend:v1")
        await stack.apply({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                           "metadata": {"name": "deploy", "namespace": "flux-system"},
                           "spec": {"url": REPO, "interval": "1m", "ref": {"branch": "main"}}})
        await stack.apply({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                           "metadata": {"name": "backend", "namespace": "flux-system"},
                           "spec": {"interval": f"{SELF_HEAL}s", "path": "./staging/backend", "prune": True,
                                    "sourceRef": {"kind": "GitRepository", "name": "deploy"},
                                    "targetNamespace": "staging"}})
        await eventually(lambda: at_revision(stack, 1), timeout=20, what="Flux to apply revision 1", stack=stack)
        await rollout_status(stack)
        bad = commit(git, "./staging/backend", "backend:v2", SIM_HEALTHY="false")
        await eventually(lambda: undo_count(stack) == 1, timeout=40, what="rollguard to undo revision 2", stack=stack)
        kustomization = owner(stack, KUSTOMIZATIONS, "flux-system", "backend")
        assert kustomization["spec"]["suspend"] is True
        sticks_until = time.monotonic() + 4 * SELF_HEAL
        await eventually(lambda: time.monotonic() > sticks_until, timeout=30, what="several reconcile intervals")
        assert image_of(stack) == "backend:v1"
        text = json.dumps(stack.pagerduty.events)
        assert (f"Flux Kustomization flux-system/backend is suspended. Revert Git revision main@sha1:{bad} in "
                "GitRepository flux-system/deploy, path ./staging/backend and resume sync with "
                "`rollguard resume staging/backend`") in text, text

        kubeconfig = str(stack.cluster.kubeconfig)
        code, _, err = await rollguard_cli("resume", "staging/backend", "--kubeconfig", kubeconfig)
        assert code == 1, err
        assert "Git still holds revision main@sha1:" + bad in err, err
        reverted = commit(git, "./staging/backend", "backend:v1")
        await eventually(lambda: json.dumps(stack.cluster.store.list_objects(
            GITREPOSITORIES)[0]).count(reverted) == 1,
            timeout=10, what="the GitRepository to see the revert", stack=stack)
        code, _, err = await rollguard_cli("resume", "staging/backend", "--kubeconfig", kubeconfig)
        assert code == 0, err
        kustomization = owner(stack, KUSTOMIZATIONS, "flux-system", "backend")
        assert kustomization["spec"]["suspend"] is False
        assert "rollguard.io/suspended-revision" not in (kustomization["metadata"].get("annotations") or {})


async def test_page_mode_pages_the_git_revision_and_approve_suspends_then_rolls_back(tmp_path: Path) -> None:
    """The default mode, with the Application outside `argocd` (found through the daemon's
    ROLLGUARD_ARGOCD_NAMESPACE setting, as the stand-in's tracking id does not name its namespace)."""
    async with gitops_stack(tmp_path, "page", argocd_namespace="cd") as (stack, git, _):
        commit(git, "staging/backend", "backend:v1")
        await application(stack, "cd")
        await eventually(lambda: at_revision(stack, 1), timeout=20, what="Argo CD to apply revision 1", stack=stack)
        await rollout_status(stack)
        bad = commit(git, "staging/backend", "backend:v2", SIM_HEALTHY="false")
        await eventually(lambda: "ReviewRequested" in event_reasons(stack), timeout=40,
                         what="rollguard to ask for a review instead of undoing", stack=stack)
        await eventually(lambda: len(page_summaries(stack)) == 1, timeout=10, what="the review page", stack=stack)
        assert page_summaries(stack)[0].startswith("[staging/backend rev 2] Review a rollback of staging/backend "
                                                   "revision 2"), page_summaries(stack)
        assert (f"Not rolled back: Argo CD Application cd/backend would re-apply it (policy gitops: page). Revert "
                f"Git revision {bad} in {REPO}/staging/backend; or approve below to suspend its sync and roll "
                "back.") in page_summaries(stack)[0], page_summaries(stack)
        assert (undo_count(stack), image_of(stack)) == (0, "backend:v2")
        assert owner(stack, APPLICATIONS, "cd", "backend")["spec"]["syncPolicy"] == SYNC_POLICY, "page writes nothing"

        code, _, err = await rollguard_cli("approve", "staging/backend", "--kubeconfig", str(stack.cluster.kubeconfig))
        assert code == 0, err
        await eventually(lambda: undo_count(stack) == 1, timeout=30, what="the approved rollback", stack=stack)
        app = owner(stack, APPLICATIONS, "cd", "backend")
        assert app["spec"]["syncPolicy"] == {"syncOptions": ["CreateNamespace=true"], "retry": {"limit": 2}}
        assert json.loads(app["metadata"]["annotations"]["rollguard.io/suspended-sync-policy"]) == SYNC_POLICY
        sticks_until = time.monotonic() + 4 * SELF_HEAL
        await eventually(lambda: time.monotonic() > sticks_until, timeout=30, what="several self-heal periods")
        assert (undo_count(stack), image_of(stack)) == (1, "backend:v1"), "the approved rollback must stick"
        rolled_back = [s for s in page_summaries(stack) if "Rolled back staging/backend" in s]
        assert len(rolled_back) == 1, page_summaries(stack)
        assert (f"Rolled back in the cluster; Argo CD Application cd/backend is suspended. Revert Git revision {bad} "
                f"in {REPO}/staging/backend and resume sync with `rollguard resume staging/backend`") in rolled_back[0]
        assert sum("Not rolled back" in s for s in page_summaries(stack)) == 1, page_summaries(stack)


async def test_a_successor_announces_a_half_done_rollback_with_the_recorded_git_revision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the undo and its announcement: the next replica announces it, naming the owner and
    the Git revision from what it reads (the revision recorded on the suspended Application), not memory."""
    async with gitops_stack(tmp_path, "suspend") as (stack, git, _):
        commit(git, "staging/backend", "backend:v1")
        await application(stack)
        await eventually(lambda: at_revision(stack, 1), timeout=20, what="Argo CD to apply revision 1", stack=stack)
        await rollout_status(stack)
        undone = asyncio.Event()
        stuck: list[asyncio.Task[Any]] = []

        async def killed_before_announcing(*_: Any, **__: Any) -> Any:
            stuck.append(asyncio.current_task())  # type: ignore[arg-type]
            undone.set()
            await asyncio.Event().wait()  # ended with the daemon below

        monkeypatch.setattr(Actions, "announce_rollback", killed_before_announcing)
        bad = commit(git, "staging/backend", "backend:v2", SIM_HEALTHY="false")
        await eventually(undone.is_set, timeout=40, what="rollguard to undo revision 2", stack=stack)
        await stack.stop_daemon(kill=True)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        monkeypatch.undo()
        assert (image_of(stack), undo_count(stack), page_summaries(stack)) == ("backend:v1", 0, [])
        # Git moves on meanwhile (Argo CD still compares): the announcement must name what was rolled back.
        reverted = commit(git, "staging/backend", "backend:v1")
        await eventually(lambda: owner(stack, APPLICATIONS, "argocd", "backend")["status"]["sync"]["revision"]
                         == reverted, timeout=10, what="Argo CD to see the revert", stack=stack)

        await stack.start_daemon()
        await eventually(lambda: undo_count(stack) == 1, timeout=30, what="the successor's announcement", stack=stack)
        rolled_back = next(e["message"] for e in stack.cluster.store.list_objects(EVENTS, "staging")[0]
                           if e.get("reason") == "RolledBack")
        assert rolled_back.startswith("Rolled back staging/backend from revision 2 to revision 1: Rolled back in the "
                                      "cluster; Argo CD Application argocd/backend is suspended. Revert Git revision "
                                      f"{bad} in {REPO}/staging/backend and resume sync with `rollguard resume "
                                      "staging/backend`. Trigger: "), rolled_back
        assert image_of(stack) == "backend:v1"
