"""`rollguard replay` finds rollouts whose ReplicaSets were pruned, from kube-state-metrics series.

The history of `tests/test_replay.py` (three rollouts 20 minutes apart, the third bad), plus what
kube-state-metrics exported meanwhile: `kube_replicaset_owner`, `kube_replicaset_created` and, for
revision 1 only, `kube_replicaset_annotations` with the revision (as with
`--metric-annotations-allowlist`). The cluster keeps only revision 3's ReplicaSet: 1 and 2 were pruned.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon.replay.report import stamp
from tests.e2ekit import rollguard_cli
from tests.test_replay import HASHES, NAME, NAMESPACE, SPACING, STEP, error_ratio, policy, recorded_cluster

pytestmark = pytest.mark.prometheus


def write_history(path: Path, start: int) -> None:
    """OpenMetrics: the error ratio of each revision's pod, and kube-state-metrics' ReplicaSet series."""
    end = start + len(HASHES) * SPACING
    families: dict[str, list[str]] = {"error_ratio": [], "kube_replicaset_owner": [], "kube_replicaset_created": [],
                                      "kube_replicaset_annotations": []}
    for index, hash_ in enumerate(HASHES):
        begin = start + index * SPACING
        rs = f'namespace="{NAMESPACE}",replicaset="{NAME}-{hash_}"'
        for after in range(0, SPACING, STEP):
            families["error_ratio"].append(f'error_ratio{{namespace="{NAMESPACE}",pod="{NAME}-{hash_}-x1"}} '
                                           f"{error_ratio(index + 1, after)} {begin + after}")
        for at in range(begin, end, STEP):
            families["kube_replicaset_owner"].append(
                f'kube_replicaset_owner{{{rs},owner_kind="Deployment",owner_name="{NAME}",owner_is_controller="true"}}'
                f" 1 {at}")
            families["kube_replicaset_created"].append(f"kube_replicaset_created{{{rs}}} {begin} {at}")
            if index == 0:
                families["kube_replicaset_annotations"].append(
                    f'kube_replicaset_annotations{{{rs},annotation_deployment_kubernetes_io_revision="1"}} 1 {at}')
    # Another Deployment's ReplicaSet in the namespace is not one of web's rollouts.
    for at in range(start, end, STEP):
        families["kube_replicaset_owner"].append(
            f'kube_replicaset_owner{{namespace="{NAMESPACE}",replicaset="api-zzz",owner_kind="Deployment",'
            f'owner_name="api",owner_is_controller="true"}} 1 {at}')
        families["kube_replicaset_created"].append(
            f'kube_replicaset_created{{namespace="{NAMESPACE}",replicaset="api-zzz"}} {start + 60} {at}')
    lines = []
    for family, samples in families.items():
        lines += [f"# HELP {family} {family}.", f"# TYPE {family} gauge", *samples]
    path.write_text("\n".join([*lines, "# EOF"]) + "\n")


@pytest.fixture(scope="module")
def ksm_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The TSDB blocks of the history, and its start (epoch seconds)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (it comes with Debian's prometheus package: make prometheus)"
    root = tmp_path_factory.mktemp("ksm-history")
    start = (int(time.time()) - 3 * 3600) // 60 * 60
    write_history(root / "history.om", start)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
                    str(root / "blocks")], check=True, capture_output=True, timeout=120)
    return root / "blocks", start


async def test_pruned_replica_sets_are_found_from_kube_state_metrics_and_judged(
        tmp_path: Path, ksm_history: tuple[Path, int]) -> None:
    async with recorded_cluster(tmp_path, ksm_history, policy("1m"), present=("ccc",)) as world:
        code, out, err = await rollguard_cli(
            "replay", "--rules", str(world.rules), "--prometheus-url", world.prometheus_url,
            "--kubeconfig", str(world.kubeconfig), f"{NAMESPACE}/{NAME}", "-o", "json")
        text_code, text, _ = await rollguard_cli(
            "replay", "--rules", str(world.rules), "--prometheus-url", world.prometheus_url,
            "--kubeconfig", str(world.kubeconfig), f"{NAMESPACE}/{NAME}")
    assert code == 0 == text_code, err
    document = json.loads(out)
    _, start = ksm_history
    assert [(r["revision"], r["podTemplateHash"], r["startedAt"] - start, r["startedFrom"], r["outcome"], r["after"],
             r["rule"]) for r in document["rollouts"]] == [
        (1, "aaa", 0.0, "kube-state-metrics", "passed", 300.0, None),
        # Without the annotation series, the revision number of a pruned ReplicaSet is unknown.
        (0, "bbb", SPACING, "kube-state-metrics", "passed", 300.0, None),
        (3, "ccc", 2 * SPACING, "ReplicaSet", "rolled back", 120.0, "error-ratio-over-5pct"),
    ], out
    assert document["rollouts"][2]["message"] == (
        "error-ratio-over-5pct: error_ratio > 0.05 held for 1m (error_ratio=0.3)"), out
    assert document["notes"] == [], out
    line = f"{NAMESPACE}/{NAME} revision 1, started {stamp(start)} (from kube-state-metrics), policy web\n"
    assert line in text, text


def write_undo_history(path: Path, start: int) -> None:
    """Revision 1 (`aaa`, good), revision 2 (`bbb`, good), then someone's undo back to `aaa` as revision 3,
    which goes bad after a minute; kube-state-metrics exports the revision annotation, 3 from the undo on."""
    end = start + len(HASHES) * SPACING
    slots = [("aaa", 1, 0.0), ("bbb", 2, 0.0), ("aaa", 3, 0.3)]
    errors, owners, created, revisions = [], [], [], []
    for index, (hash_, _, bad) in enumerate(slots):
        begin = start + index * SPACING
        for after in range(0, SPACING, STEP):
            errors.append(f'error_ratio{{namespace="{NAMESPACE}",pod="{NAME}-{hash_}-x1"}} '
                          f"{bad if after >= 60 else 0.0} {begin + after}")
    for hash_, first in (("aaa", start), ("bbb", start + SPACING)):
        rs = f'namespace="{NAMESPACE}",replicaset="{NAME}-{hash_}"'
        for at in range(first, end, STEP):
            owners.append(f'kube_replicaset_owner{{{rs},owner_kind="Deployment",owner_name="{NAME}",'
                          f'owner_is_controller="true"}} 1 {at}')
            created.append(f"kube_replicaset_created{{{rs}}} {first} {at}")
            revision = 2 if hash_ == "bbb" else (1 if at < start + 2 * SPACING else 3)
            revisions.append(f'kube_replicaset_annotations{{{rs},annotation_deployment_kubernetes_io_revision='
                             f'"{revision}"}} 1 {at}')
    # promtool wants each series' samples together, in time order.
    revisions.sort(key=lambda line: (line.split("}")[0], int(line.rsplit(" ", 1)[1])))
    lines = []
    for family, samples in (("error_ratio", errors), ("kube_replicaset_owner", owners),
                            ("kube_replicaset_created", created), ("kube_replicaset_annotations", revisions)):
        lines += [f"# HELP {family} {family}.", f"# TYPE {family} gauge", *samples]
    path.write_text("\n".join([*lines, "# EOF"]) + "\n")


@pytest.fixture(scope="module")
def undo_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (it comes with Debian's prometheus package: make prometheus)"
    root = tmp_path_factory.mktemp("undo-history")
    start = (int(time.time()) - 3 * 3600) // 60 * 60
    write_undo_history(root / "history.om", start)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
                    str(root / "blocks")], check=True, capture_output=True, timeout=120)
    return root / "blocks", start


async def test_an_undo_nobody_recorded_starts_when_kube_state_metrics_first_saw_its_revision(
        tmp_path: Path, undo_history: tuple[Path, int]) -> None:
    async with recorded_cluster(tmp_path, undo_history, policy("1m"), present=("aaa", "bbb"),
                                renumbered={"aaa": (3, "1")}) as world:
        code, out, err = await rollguard_cli(
            "replay", "--rules", str(world.rules), "--prometheus-url", world.prometheus_url,
            "--kubeconfig", str(world.kubeconfig), f"{NAMESPACE}/{NAME}", "-o", "json")
    assert code == 0, err
    document = json.loads(out)
    _, start = undo_history
    assert [(r["revision"], r["podTemplateHash"], r["startedAt"] - start, r["startedFrom"], r["outcome"], r["after"])
            for r in document["rollouts"]] == [
        (1, "aaa", 0.0, "ReplicaSet", "passed", 300.0),
        (2, "bbb", SPACING, "ReplicaSet", "passed", 300.0),
        (3, "aaa", 2 * SPACING, "kube-state-metrics", "rolled back", 120.0),
    ], out
    assert document["notes"] == [], out
