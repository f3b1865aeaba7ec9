"""The demo's GitOps step: Argo CD owns `backend`, a bad deploy comes from Git, rollguard suspends sync
and rolls back, the SRE reverts in Git and runs `rollguard resume`.

It runs after the other steps, so their verdicts do not change: the demo's policy has `gitops:
suspend` (`use_suspend`), which only matters for a Deployment that an Argo CD Application applies — and
`backend` is handed to one (the `sim.gitops` stand-in, self-healing after `SELF_HEAL` seconds) only here.
The Git history is `sim.gitops.FakeGit`: the live template first (adopted without a new revision), then
the bad commit, then its revert.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from daemon.settings import ActionLimits
from sim.demo.run import Demo
from sim.demo.script import HEALTHY, Step
from sim.gitops import APPLICATIONS, TRACKING_ID, FakeGit, running_gitops
from sim.resources import DEPLOYMENTS
from sim.store import copy_json

REPO = "https://git.example/shop/deploy.git"
PATH = "staging/backend"
SELF_HEAL = 2.0
"""Seconds before the stand-in reverts drift (Argo CD's default is 5)."""
SYNC_POLICY = {"automated": {"prune": True, "selfHeal": True}}
VERDICT = "rolled back, sync resumed"
CHANGE_CAUSE = "kubernetes.io/change-cause"
GITOPS_LIMITS = ActionLimits(max_rollbacks=5)
"""The demo's rollback cap: this step's rollback is the story's fifth within the hour (fourth without
Alertmanager), and the default cap (3) would turn it into a review."""


def use_suspend(rules_dir: Path) -> str:
    """Give the demo's policies `gitops: suspend`; returns the line for the demo's header."""
    for path in sorted(rules_dir.glob("*.y*ml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in documents:
            doc.setdefault("spec", {})["gitops"] = "suspend"
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return (f"gitops: suspend (only the last step's Deployment is applied by Argo CD); at most "
            f"{GITOPS_LIMITS.max_rollbacks} rollbacks an hour (ROLLGUARD_MAX_ROLLBACKS) for its last")


def _git_manifest(live: dict[str, Any]) -> dict[str, Any]:
    """The live Deployment as its manifest in Git (what Argo CD adopts without a new rollout)."""
    meta = live["metadata"]
    cause = {k: v for k, v in (meta.get("annotations") or {}).items() if k == CHANGE_CAUSE}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": dict(meta.get("labels") or {}), "annotations": cause},
            "spec": copy_json(live["spec"])}


def _with_image(manifest: dict[str, Any], image: str, env: dict[str, str], cause: str) -> dict[str, Any]:
    changed = copy_json(manifest)
    changed["metadata"]["annotations"] = {CHANGE_CAUSE: cause}
    container = changed["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return changed


def _application() -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "backend", "namespace": "argocd"},
            "spec": {"project": "default", "source": {"repoURL": REPO, "path": PATH, "targetRevision": "HEAD"},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": "staging"},
                     "syncPolicy": copy_json(SYNC_POLICY)}}


async def play_gitops_step(demo: Demo) -> None:
    """Play the step and record it in `demo.steps` (its verdict: `VERDICT`, or what went wrong)."""
    stack, say = demo.stack, demo.t.say
    store = stack.cluster.store
    step = Step("v8 from Git via Argo CD, 12% 5xx", "backend:v8", {"SIM_ERROR_RATIO": "0.12"}, "gitops")
    demo.steps.append(step)
    live = store.peek(DEPLOYMENTS, "staging", "backend")
    if live is None:
        step.verdict = "? (no backend Deployment)"
        return
    good = _git_manifest(live)
    git = FakeGit()

    def app() -> dict[str, Any]:
        return store.peek(APPLICATIONS, "argocd", "backend") or {}

    def tracked() -> bool:
        return TRACKING_ID in ((store.peek(DEPLOYMENTS, "staging", "backend") or {}).get("metadata") or {}).get(
            "annotations", {})

    await stack.kubectl("create", "namespace", "argocd")
    async with running_gitops(store, stack.cluster.clock, git, self_heal_delay=SELF_HEAL, tick=0.25):
        first = git.commit(REPO, PATH, [good])
        say("git", f"commit {first[:7]}: {PATH} holds the live template ({demo.image()})")
        say("sre", f"hand backend to Argo CD: Application argocd/backend, {REPO} {PATH}, automated sync "
                   f"with self-heal ({SELF_HEAL:g}s)")
        await stack.apply(_application())
        if not await demo.wait_for("Argo CD to adopt backend", tracked, 20):
            step.verdict = "? (Argo CD did not adopt backend)"
            return
        say("argocd", f"synced {first[:7]}: backend now carries {TRACKING_ID} (no new revision)")

        before, revision_before = demo.image(), demo.revision()
        bad = git.commit(REPO, PATH, [_with_image(good, step.image, {**HEALTHY, **step.env},
                                                  f"{step.image}: {step.title}")])
        say("git", f"commit {bad[:7]}: {PATH} backend:v8  ({step.title})")
        await demo.wait_for("Argo CD to sync the bad commit", lambda: demo.revision() > revision_before, 30)
        await demo.wait_for("its ReplicaSet", lambda: bool(demo.new_hash()), 30)
        sampler = asyncio.create_task(demo.watch_bad_sample(step))
        try:
            rolled_back = await demo.wait_for("the rollback", lambda: demo.image() == before, 120)
            step.rolled_back_at = time.monotonic()
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        automated = "automated" in ((app().get("spec") or {}).get("syncPolicy") or {})
        say("argocd", "Application argocd/backend: automated sync "
                      + ("ON" if automated else "off (suspended by rollguard)"))
        # Several self-heal periods: with sync on, the stand-in would have put v8 back by now.
        sticks_until = time.monotonic() + 3 * SELF_HEAL
        await demo.wait_for("three self-heal periods", lambda: time.monotonic() > sticks_until, 10 * SELF_HEAL)
        stuck = rolled_back and demo.image() == before
        say("demo", f"after {3 * SELF_HEAL:g}s backend still runs {demo.image()}: the rollback "
                    f"{'sticks' if stuck else 'did NOT stick'}")
        paged = any(bad in str((e.get("payload") or {}).get("summary", "")) for e in stack.pagerduty.events)

        reverted = git.commit(REPO, PATH, [good])
        say("git", f"commit {reverted[:7]}: revert {bad[:7]} (the SRE follows the page)")
        await demo.wait_for("Argo CD to see the revert",
                            lambda: ((app().get("status") or {}).get("sync") or {}).get("revision") == reverted, 10)
        say("sre", "rollguard resume staging/backend")
        code, out = await _resume(demo)
        say("sre", out.strip())
        in_sync = await demo.wait_for(
            "Argo CD to be in sync again",
            lambda: ((app().get("status") or {}).get("sync") or {}).get("status") == "Synced", 20)
        restored = (app().get("spec") or {}).get("syncPolicy") == SYNC_POLICY
        say("argocd", f"Application argocd/backend: sync policy {'restored' if restored else 'NOT restored'}, "
                      f"{'Synced' if in_sync else 'OutOfSync'} at {reverted[:7]}; backend runs {demo.image()}")
        await demo.wait_for("the rollout to settle", lambda: _settled(demo), 60)
    ok = stuck and paged and code == 0 and restored and in_sync and demo.image() == before
    step.verdict = VERDICT if ok else (f"? (stuck={stuck}, paged={paged}, resume={code}, restored={restored}, "
                                       f"in sync={in_sync})")


def _settled(demo: Demo) -> bool:
    status = (demo.stack.cluster.store.peek(DEPLOYMENTS, "staging", "backend") or {}).get("status") or {}
    return bool(status.get("replicas") == status.get("updatedReplicas") == status.get("availableReplicas"))


async def _resume(demo: Demo) -> tuple[int, str]:
    """`rollguard resume staging/backend`, as the SRE runs it (the CLI, with the cluster's kubeconfig)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "resume", "staging/backend", "--kubeconfig",
        str(demo.stack.cluster.kubeconfig), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
