"""`rollguard approve` and `rollguard deny` against the simulated cluster, as a user runs them.

The command runs `asyncio.run` itself, so it runs in a worker thread while the simulated API server
answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.cli import main
from sim.resources import DEPLOYMENTS, NAMESPACES
from sim.store import Store
from tests.simkit import deployment_manifest, sim_server

NS, NAME = "staging", "backend"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def state_json(*, revision: int, phase: str) -> str:
    return json.dumps({"v": 1, "rollout": {"revision": revision, "hash": "abc", "startedAt": 1.0},
                       "phase": phase, "rules": {}, "decision": None, "completedAt": None,
                       "rolledBack": [], "rollbackTimes": []})


def create_backend(store: Store, *, revision: int, state: str | None) -> dict[str, str]:
    """The Deployment `staging/backend` at `revision` with the given state annotation; returns its annotations."""
    deployment = deployment_manifest(NAME)
    annotations = {REVISION_ANNOTATION: str(revision)}
    if state is not None:
        annotations["rollguard.io/state"] = state
    deployment["metadata"]["annotations"] = annotations
    store.create(NAMESPACES, {"metadata": {"name": NS}})
    store.create(DEPLOYMENTS, deployment, namespace=NS)
    return dict(annotations)


def annotations_of(store: Store) -> dict[str, str]:
    return dict(store.get(DEPLOYMENTS, NS, NAME)["metadata"].get("annotations") or {})


def set_kubeconfig_user(kubeconfig: Path, user: str | None) -> None:
    """Rename the current context's user (the token stays), or drop the user from the context."""
    document: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    context = document["contexts"][0]["context"]
    if user is None:
        del context["user"]
    else:
        document["users"][0]["name"] = user
        context["user"] = user
    kubeconfig.write_text(yaml.safe_dump(document))


async def rollguard(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_approve_writes_the_pending_revision_and_the_kubeconfig_user(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with sim_server(tmp_path) as cluster:
        set_kubeconfig_user(cluster.kubeconfig, "alice@example.com")
        before = create_backend(cluster.store, revision=8, state=state_json(revision=8, phase="review"))
        result = await rollguard(capsys, "approve", f"{NS}/{NAME}", "--kubeconfig", str(cluster.kubeconfig))
        assert result == (0, "deployment.apps/backend: rollback of revision 8 approved by alice@example.com "
                             "(self-declared)\n", "")
        assert annotations_of(cluster.store) == {**before, "rollguard.io/approve": "rollback",
                                                 "rollguard.io/approve-revision": "8",
                                                 "rollguard.io/approved-by": "alice@example.com"}


async def test_deny_with_revision_and_by(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with sim_server(tmp_path) as cluster:
        before = create_backend(cluster.store, revision=8, state=state_json(revision=8, phase="review"))
        result = await rollguard(capsys, "deny", f"{NS}/{NAME}", "--revision", "8", "--by", "bob",
                                 "--kubeconfig", str(cluster.kubeconfig))
        assert result == (0, "deployment.apps/backend: review of revision 8 closed without rollback by bob "
                             "(self-declared)\n", "")
        assert annotations_of(cluster.store) == {**before, "rollguard.io/approve": "deny",
                                                 "rollguard.io/approve-revision": "8",
                                                 "rollguard.io/approved-by": "bob"}


async def test_approver_falls_back_to_user(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "carol")
    async with sim_server(tmp_path) as cluster:
        set_kubeconfig_user(cluster.kubeconfig, None)
        create_backend(cluster.store, revision=3, state=state_json(revision=3, phase="review"))
        result = await rollguard(capsys, "approve", f"{NS}/{NAME}", "--kubeconfig", str(cluster.kubeconfig))
        assert result == (0, "deployment.apps/backend: rollback of revision 3 approved by carol (self-declared)\n", "")
        assert annotations_of(cluster.store)["rollguard.io/approved-by"] == "carol"


# (case id, command line after the target, revision, state annotation, stderr)
REFUSALS = [
    ("no state", ["approve"], 8, None,
     "rollguard approve: no review is pending for deployment staging/backend: nothing to approve\n"),
    ("analysis passed", ["deny"], 8, state_json(revision=8, phase="passed"),
     "rollguard deny: no review is pending for deployment staging/backend: nothing to deny (phase: passed)\n"),
    ("state unreadable", ["approve"], 8, "{not json",
     "rollguard approve: no review is pending for deployment staging/backend: nothing to approve "
     "(its rollguard.io/state annotation cannot be read)\n"),
    ("review of an older revision", ["approve"], 9, state_json(revision=8, phase="review"),
     "rollguard approve: no review is pending for deployment staging/backend: nothing to approve "
     "(the review was for revision 8, but the Deployment is at revision 9: a newer deploy landed)\n"),
    ("revision older than the review", ["approve", "--revision", "7"], 8, state_json(revision=8, phase="review"),
     "rollguard approve: the review is for revision 8, not 7: a newer deploy landed\n"),
    ("revision newer than the review", ["deny", "--revision", "9"], 8, state_json(revision=8, phase="review"),
     "rollguard deny: the review is for revision 8, not 9\n"),
]


@pytest.mark.parametrize(("command", "revision", "state", "stderr"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
async def test_refusals_exit_1_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 command: list[str], revision: int, state: str | None,
                                                 stderr: str) -> None:
    async with sim_server(tmp_path) as cluster:
        create_backend(cluster.store, revision=revision, state=state)
        before = cluster.store.get(DEPLOYMENTS, NS, NAME)
        result = await rollguard(capsys, command[0], f"{NS}/{NAME}", *command[1:], "--by", "alice",
                                 "--kubeconfig", str(cluster.kubeconfig))
        assert result == (1, "", stderr)
        assert cluster.store.get(DEPLOYMENTS, NS, NAME) == before, "a refused approval must write nothing"
        assert [r for r in cluster.audit if r.verb == "patch"] == []


async def test_missing_deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with sim_server(tmp_path) as cluster:
        code, out, err = await rollguard(capsys, "approve", f"{NS}/{NAME}", "--by", "alice",
                                         "--kubeconfig", str(cluster.kubeconfig))
        assert (code, out) == (1, "")
        assert err.startswith("rollguard approve: cannot read deployment staging/backend: 404 NotFound: "), err


@pytest.mark.parametrize(("args", "message"), [
    (["deny", "staging"], "argument NAMESPACE/DEPLOYMENT: 'staging' is not NAMESPACE/DEPLOYMENT"),
    (["approve", "staging/backend", "--revision", "seven"], "argument --revision: 'seven' is not a revision number"),
    (["approve", "staging/backend", "--revision", "0"], "argument --revision: '0' is not a revision number"),
    (["deny", "staging/backend", "--by", "\x1b "], "argument --by: the approver's name is empty"),
], ids=["target", "revision-word", "revision-zero", "by-empty"])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

