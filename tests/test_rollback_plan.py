"""`plan_undo` decides exactly what `kubectl rollout undo` would (spec section 3), without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.kube.rollback import UndoRefused, label_selector_text, plan_undo

UID = "d-uid"


def rs(revision: int, image: str, hash_: str, *, owner: str = UID, annotations: dict[str, str] | None = None
       ) -> dict[str, Any]:
    return {
        "metadata": {"name": f"web-{hash_}", "labels": {"app": "web", "pod-template-hash": hash_},
                     "annotations": {"deployment.kubernetes.io/revision": str(revision), **(annotations or {})},
                     "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner, "controller": True}]},
        "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
                              "spec": {"containers": [{"name": "web", "image": image, "resources": {}}]}}},
    }


def deployment(image: str, *, paused: bool = False, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "resourceVersion": "10",
                     "annotations": {"deployment.kubernetes.io/revision": "3", "team": "a", **(annotations or {})}},
        "spec": {"paused": paused, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}},
    }


HISTORY = [rs(1, "img:1", "aaa"), rs(2, "img:2", "bbb", annotations={"kubernetes.io/change-cause": "v2"}),
           rs(3, "img:3", "ccc")]


def test_default_target_is_second_highest_revision_and_patch_matches_kubectl() -> None:
    plan = plan_undo(deployment("img:3"), HISTORY)
    assert (plan.target_revision, plan.target_replica_set, plan.skipped) == (2, "web-bbb", False)
    assert plan.message == "deployment.apps/web rolled back"
    assert plan.patch == (
        {"op": "replace", "path": "/spec/template",
         "value": {"metadata": {"labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "web", "image": "img:2", "resources": {}}]}}},
        # kubectl keeps the controller's keys from the Deployment, takes the rest from the target
        # ReplicaSet, and drops the Deployment's other annotations ("team").
        {"op": "replace", "path": "/metadata/annotations",
         "value": {"deployment.kubernetes.io/revision": "3", "kubernetes.io/change-cause": "v2"}},
    )


def test_to_revision_picks_that_revision() -> None:
    assert plan_undo(deployment("img:3"), HISTORY, to_revision=1).target_replica_set == "web-aaa"


def test_replica_sets_of_other_owners_are_ignored() -> None:
    foreign = rs(9, "img:9", "zzz", owner="someone-else")
    assert plan_undo(deployment("img:3"), [*HISTORY, foreign]).target_revision == 2


@pytest.mark.parametrize(
    ("replica_sets", "to_revision", "message"),
    [
        (HISTORY, 7, "unable to find specified revision 7 in history"),
        (HISTORY, -1, "unable to find specified revision -1 in history"),
        (HISTORY[2:], 0, 'no rollout history found for deployment "web"'),
    ],
)
def test_refusals_carry_kubectls_messages(replica_sets: list[dict[str, Any]], to_revision: int,
                                          message: str) -> None:
    with pytest.raises(UndoRefused) as err:
        plan_undo(deployment("img:3"), replica_sets, to_revision=to_revision)
    assert str(err.value) == message


def test_paused_deployment_is_refused() -> None:
    with pytest.raises(UndoRefused) as err:
        plan_undo(deployment("img:3", paused=True), HISTORY)
    assert str(err.value) == ("you cannot rollback a paused deployment; resume it first with "
                              "'kubectl rollout resume' and try again")


def test_already_at_target_is_skipped_with_kubectls_message() -> None:
    plan = plan_undo(deployment("img:2"), HISTORY, to_revision=2)
    assert plan.skipped
    assert plan.patch == ()
    assert plan.message == "deployment.apps/web skipped rollback (current template already matches revision 2)"


def test_keep_prefix_preserves_rollguards_own_annotations() -> None:
    stale = rs(2, "img:2", "bbb", annotations={"rollguard.io/state": "stale"})
    plan = plan_undo(deployment("img:3", annotations={"rollguard.io/state": "current"}),
                     [HISTORY[0], stale, HISTORY[2]], keep_prefix="rollguard.io/")
    assert plan.patch[1]["value"]["rollguard.io/state"] == "current"


def test_label_selector_text() -> None:
    selector = {"matchLabels": {"app": "web", "tier": "api"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]},
                                     {"key": "x", "operator": "Exists"},
                                     {"key": "y", "operator": "DoesNotExist"},
                                     {"key": "z", "operator": "NotIn", "values": ["c"]}]}
    assert label_selector_text(selector) == "app=web,tier=api,env in (a,b),x,!y,z notin (c)"
