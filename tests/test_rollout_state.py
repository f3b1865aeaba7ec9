"""kube.rollout_state: every `kubectl rollout status` case (spec section 2), new/previous ReplicaSet, rollout starts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from daemon.kube.rollout_state import (
    RevisionMismatch,
    RolloutId,
    RolloutPhase,
    RolloutStatus,
    is_new_rollout,
    previous_replica_set,
    rollout_identity,
    rollout_status,
)

UID = "0b6c5b8e-1111-4c1e-9d7e-000000000001"
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
}


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 4,
    observed: int | None = 4,
    updated: int = 3,
    current: int = 3,
    available: int = 3,
    progressing_reason: str | None = "NewReplicaSetAvailable",
    progressing_status: str = "True",
    revision: str | None = "2",
    paused: bool = False,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Deployment as the API returns it (the spec's example after a completed second rollout, by default)."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "progressDeadlineSeconds": 600,
        "template": copy.deepcopy(template or TEMPLATE),
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if paused:
        spec["paused"] = True
    status: dict[str, Any] = {"replicas": current, "updatedReplicas": updated, "availableReplicas": available}
    if observed is not None:
        status["observedGeneration"] = observed
    conditions = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
    if progressing_reason is not None:
        conditions.append({"type": "Progressing", "status": progressing_status, "reason": progressing_reason})
    status["conditions"] = conditions
    annotations = {"kubernetes.io/change-cause": "image 1.25"}
    if revision is not None:
        annotations["deployment.kubernetes.io/revision"] = revision
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": UID,
            "generation": generation,
            "annotations": annotations,
        },
        "spec": spec,
        "status": status,
    }


def replica_set(
    name_hash: str,
    revision: str | None,
    *,
    template: dict[str, Any] | None = None,
    owner_uid: str = UID,
    controller: bool = True,
    created: str = "2025-03-01T10:00:00Z",
) -> dict[str, Any]:
    rs_template = copy.deepcopy(template or TEMPLATE)
    rs_template["metadata"]["labels"]["pod-template-hash"] = name_hash
    annotations = {} if revision is None else {"deployment.kubernetes.io/revision": revision}
    return {
        "metadata": {
            "name": f"web-{name_hash}",
            "namespace": "shop",
            "creationTimestamp": created,
            "labels": {"app": "web", "pod-template-hash": name_hash},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": owner_uid,
                    "controller": controller,
                }
            ],
        },
        "spec": {"replicas": 3, "template": rs_template},
    }


OLD_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.24"}]},
}
WAIT = 'Waiting for deployment "web" rollout to finish: '


# ---- kubectl rollout status, spec section 2 -----------------------------------------------------


def test_complete() -> None:
    assert rollout_status(deployment()) == RolloutStatus(
        RolloutPhase.COMPLETE, 'deployment "web" successfully rolled out', done=True, failed=False
    )


def test_spec_update_not_observed_yet() -> None:
    status = rollout_status(deployment(generation=5, observed=4))
    assert status == RolloutStatus(
        RolloutPhase.WAITING_SPEC, "Waiting for deployment spec update to be observed...", done=False, failed=False
    )


def test_brand_new_deployment_without_status_waits_for_observation() -> None:
    d = deployment(observed=None)
    del d["status"]
    assert rollout_status(d).message == "Waiting for deployment spec update to be observed..."


def test_observed_generation_ahead_counts_as_observed() -> None:
    assert rollout_status(deployment(generation=4, observed=5)).done


def test_progress_deadline_exceeded_fails() -> None:
    status = rollout_status(
        deployment(progressing_reason="ProgressDeadlineExceeded", progressing_status="False", updated=1, available=1)
    )
    assert status == RolloutStatus(
        RolloutPhase.FAILED, 'deployment "web" exceeded its progress deadline', done=False, failed=True
    )


def test_deadline_reason_counts_whatever_the_condition_status() -> None:
    status = rollout_status(deployment(progressing_reason="ProgressDeadlineExceeded", progressing_status="Unknown"))
    assert status.failed
    assert status.phase is RolloutPhase.FAILED


def test_deadline_is_not_judged_before_the_spec_is_observed() -> None:
    status = rollout_status(deployment(generation=5, observed=4, progressing_reason="ProgressDeadlineExceeded"))
    assert (status.phase, status.failed) == (RolloutPhase.WAITING_SPEC, False)


def test_new_replicas_being_updated() -> None:
    status = rollout_status(deployment(updated=1, current=4, available=3))
    assert status == RolloutStatus(
        RolloutPhase.PROGRESSING, f"{WAIT}1 out of 3 new replicas have been updated...", done=False, failed=False
    )


def test_old_replicas_pending_termination() -> None:
    status = rollout_status(deployment(updated=3, current=4, available=3))
    assert status.message == f"{WAIT}1 old replicas are pending termination..."
    assert (status.phase, status.done) == (RolloutPhase.PROGRESSING, False)


def test_updated_replicas_becoming_available() -> None:
    status = rollout_status(deployment(updated=3, current=3, available=2))
    assert status.message == f"{WAIT}2 of 3 updated replicas are available..."
    assert (status.phase, status.done) == (RolloutPhase.PROGRESSING, False)


def test_checks_run_in_kubectl_order() -> None:
    # All three waiting conditions hold: the first one wins.
    assert rollout_status(deployment(updated=1, current=5, available=0)).message == (
        f"{WAIT}1 out of 3 new replicas have been updated..."
    )
    # The deadline beats every waiting condition.
    assert rollout_status(deployment(updated=1, progressing_reason="ProgressDeadlineExceeded")).failed


def test_without_spec_replicas_the_updated_check_is_skipped() -> None:
    status = rollout_status(deployment(replicas=None, updated=1, current=1, available=1))
    assert status.done
    assert rollout_status(deployment(replicas=None, updated=1, current=2, available=1)).message == (
        f"{WAIT}1 old replicas are pending termination..."
    )


def test_scaled_to_zero_is_complete() -> None:
    assert rollout_status(deployment(replicas=0, updated=0, current=0, available=0)).done


def test_pinned_revision_matching_evaluates_normally() -> None:
    assert rollout_status(deployment(revision="2"), revision=2).done


def test_pinned_revision_mismatch() -> None:
    with pytest.raises(RevisionMismatch) as caught:
        rollout_status(deployment(revision="3"), revision=2)
    assert str(caught.value) == "desired revision (2) is different from the running revision (3)"
    assert (caught.value.desired, caught.value.running) == (2, 3)


def test_pinned_revision_missing_annotation_counts_as_zero() -> None:
    with pytest.raises(
        RevisionMismatch, match=r"^desired revision \(1\) is different from the running revision \(0\)$"
    ):
        rollout_status(deployment(revision=None), revision=1)


def test_revision_zero_means_not_pinned() -> None:
    assert rollout_status(deployment(revision="7"), revision=0).done


# ---- paused ---------------------------------------------------------------------------------------


def test_paused_with_pending_template_is_paused_with_kubectls_message() -> None:
    status = rollout_status(
        deployment(paused=True, updated=0, progressing_reason="DeploymentPaused", progressing_status="Unknown")
    )
    assert status == RolloutStatus(
        RolloutPhase.PAUSED, f"{WAIT}0 out of 3 new replicas have been updated...", done=False, failed=False
    )


def test_paused_but_complete_is_complete() -> None:
    assert rollout_status(deployment(paused=True)).phase is RolloutPhase.COMPLETE


def test_paused_after_deadline_is_still_failed() -> None:
    assert rollout_status(deployment(paused=True, progressing_reason="ProgressDeadlineExceeded")).phase is (
        RolloutPhase.FAILED
    )


def test_paused_spec_change_not_observed_is_paused() -> None:
    status = rollout_status(deployment(paused=True, generation=6, observed=5))
    assert (status.phase, status.message) == (
        RolloutPhase.PAUSED,
        "Waiting for deployment spec update to be observed...",
    )


# ---- identity, new and previous ReplicaSet --------------------------------------------------------


def test_identity_is_the_new_replica_set() -> None:
    d = deployment(revision="2")
    rss = [replica_set("6d4b5c7f9", "1", template=OLD_TEMPLATE), replica_set("7c5ddbdf54", "2")]
    assert rollout_identity(d, rss) == RolloutId("shop", "web", 2, "7c5ddbdf54")
    assert rollout_status(d, rss).new_replica_set == "web-7c5ddbdf54"


def test_identity_before_the_replica_set_exists() -> None:
    d = deployment(revision="2", template=OLD_TEMPLATE | {"spec": {"containers": [{"name": "web", "image": "x:3"}]}})
    rss = [replica_set("6d4b5c7f9", "1", template=OLD_TEMPLATE), replica_set("7c5ddbdf54", "2")]
    assert rollout_identity(d, rss) == RolloutId("shop", "web", 2, None)
    assert rollout_status(d, rss).new_replica_set is None


def test_template_equality_ignores_null_and_empty_values() -> None:
    noisy = {
        "metadata": {"labels": {"app": "web"}, "annotations": {}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "env": [], "resources": {}}], "volumes": None},
    }
    d = deployment(template=noisy)
    assert rollout_identity(d, [replica_set("7c5ddbdf54", "2")]).pod_template_hash == "7c5ddbdf54"


def test_replica_sets_not_controlled_by_this_deployment_are_ignored() -> None:
    d = deployment()
    rss = [
        replica_set("aaaaaaaaa", "5", owner_uid="another-uid"),
        replica_set("bbbbbbbbb", "6", controller=False),
    ]
    assert rollout_identity(d, rss) == RolloutId("shop", "web", 2, None)
    assert previous_replica_set(d, rss) is None


def test_several_matching_replica_sets_the_oldest_wins() -> None:
    rss = [
        replica_set("ccccccccc", "3", created="2025-03-02T00:00:00Z"),
        replica_set("bbbbbbbbb", "2", created="2025-03-01T00:00:00Z"),
        replica_set("aaaaaaaaa", "2", created="2025-03-01T00:00:00Z"),
    ]
    assert rollout_identity(deployment(), rss).pod_template_hash == "aaaaaaaaa"


def test_unparsable_replica_set_revision_falls_back_to_the_deployments() -> None:
    assert rollout_identity(deployment(revision="4"), [replica_set("7c5ddbdf54", "x")]).revision == 4


def test_previous_replica_set_is_the_highest_revision_below_the_current() -> None:
    rss = [
        replica_set("r1", "1", template=OLD_TEMPLATE),
        replica_set("r3", "3", template=OLD_TEMPLATE),
        replica_set("bad", "nope", template=OLD_TEMPLATE),
        replica_set("r4", "4"),
        replica_set("r2", "2", template=OLD_TEMPLATE),
    ]
    previous = previous_replica_set(deployment(revision="4"), rss)
    assert previous is not None
    assert previous["metadata"]["name"] == "web-r3"


def test_previous_after_undo_is_the_revision_rolled_back_from() -> None:
    # Revisions 1, 2, 3; `undo` to 2 makes that ReplicaSet revision 4 (spec 1.4): the previous one is 3.
    rss = [
        replica_set("r1", "1", template=OLD_TEMPLATE),
        replica_set("r2", "4"),
        replica_set("r3", "3", template=OLD_TEMPLATE),
    ]
    d = deployment(revision="4")
    assert rollout_identity(d, rss) == RolloutId("shop", "web", 4, "r2")
    previous = previous_replica_set(d, rss)
    assert previous is not None
    assert previous["metadata"]["name"] == "web-r3"


def test_first_revision_has_no_previous() -> None:
    assert previous_replica_set(deployment(revision="1"), [replica_set("r1", "1")]) is None


def test_is_new_rollout() -> None:
    v2 = RolloutId("shop", "web", 2, "h2")
    assert is_new_rollout(v2, RolloutId("shop", "web", 3, "h3"))
    assert is_new_rollout(RolloutId("shop", "web", 2, None), RolloutId("shop", "web", 3, "h3"))
    assert is_new_rollout(v2, RolloutId("shop", "web", 4, "h1")), "an undo is a new rollout too"
    assert not is_new_rollout(v2, v2)
    assert not is_new_rollout(None, v2), "nothing known: a daemon start is not a rollout start"
    assert not is_new_rollout(v2, RolloutId("shop", "web", 2, None)), "no ReplicaSet yet"
    with pytest.raises(ValueError, match="different Deployments"):
        is_new_rollout(v2, RolloutId("shop", "api", 3, "h3"))
