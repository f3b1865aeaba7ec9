"""JSON patch, merge patch and strategic merge patch, with the bodies real kubectl commands send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sim.patch import PatchError, json_patch, merge_patch, strategic_merge_patch


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "payments"},
                     "labels": {"app": "web"}, "finalizers": ["a"]},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "shop/web:1.0", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "resources": {}},
                        {"name": "sidecar", "image": "envoy:1.30", "resources": {}},
                    ],
                    "restartPolicy": "Always",
                },
            },
        },
        "status": {"conditions": [{"type": "Available", "status": "True"},
                                  {"type": "Progressing", "status": "True"}]},
    }


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return result


# ----- RFC 6902 -----


def test_json_patch_operations_and_escapes() -> None:
    doc = {"a": {"b~c": 1, "d/e": [1, 2]}, "x": "y"}
    ops = [
        {"op": "add", "path": "/a/d~1e/-", "value": 3},
        {"op": "add", "path": "/a/d~1e/0", "value": 0},
        {"op": "replace", "path": "/a/b~0c", "value": 2},
        {"op": "copy", "from": "/a/b~0c", "path": "/copied"},
        {"op": "move", "from": "/x", "path": "/moved"},
        {"op": "remove", "path": "/a/d~1e/1"},
        {"op": "test", "path": "/moved", "value": "y"},
    ]
    assert json_patch(doc, ops) == {"a": {"b~c": 2, "d/e": [0, 2, 3]}, "copied": 2, "moved": "y"}
    assert doc == {"a": {"b~c": 1, "d/e": [1, 2]}, "x": "y"}, "the input is not modified"


def test_json_patch_replace_needs_an_existing_target() -> None:
    with pytest.raises(PatchError) as caught:
        json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/paused", "value": True}])
    assert caught.value.message == "replace operation does not apply: doc is missing key: /spec/paused: missing value"
    assert caught.value.bad_request is False


def test_json_patch_failures() -> None:
    with pytest.raises(PatchError, match="testing value /a failed: test failed"):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(PatchError, match="remove operation does not apply: doc is missing key: /b"):
        json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
    with pytest.raises(PatchError, match="Unable to access invalid index: 5"):
        json_patch({"a": [1]}, [{"op": "add", "path": "/a/5", "value": 2}])
    with pytest.raises(PatchError, match="Unexpected kind: frobnicate"):
        json_patch({}, [{"op": "frobnicate", "path": "/a"}])
    with pytest.raises(PatchError) as caught:
        json_patch({}, {"op": "add"})
    assert caught.value.bad_request is True


def test_kubectl_rollout_undo_patch() -> None:
    """`kubectl rollout undo` replaces the template and the annotations with a json-patch."""
    template = {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "shop/web:0.9", "resources": {}}]}}
    ops = [{"op": "replace", "path": "/spec/template", "value": template},
           {"op": "replace", "path": "/metadata/annotations",
            "value": {"deployment.kubernetes.io/revision": "3", "kubernetes.io/change-cause": "0.9"}}]
    patched = json_patch(deployment(), ops)
    assert patched["spec"]["template"] == template
    assert patched["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3",
                                                  "kubernetes.io/change-cause": "0.9"}


# ----- RFC 7386 -----


def test_merge_patch_kubectl_annotate_and_label() -> None:
    patched = merge_patch(deployment(), {"metadata": {"annotations": {"owner": "sre", "team": None},
                                                      "labels": {"tier": "frontend"}}})
    assert patched["metadata"]["annotations"] == {"owner": "sre"}
    assert patched["metadata"]["labels"] == {"app": "web", "tier": "frontend"}


def test_merge_patch_replaces_lists_and_non_objects() -> None:
    patched = merge_patch(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}})
    assert containers(patched) == [{"name": "only"}]
    assert merge_patch({"a": 1}, [1, 2]) == [1, 2]
    assert merge_patch("text", {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


def test_kubectl_scale_merge_patch() -> None:
    scale = {"kind": "Scale", "spec": {"replicas": 3}, "status": {"replicas": 3}}
    assert merge_patch(scale, {"spec": {"replicas": 5}})["spec"] == {"replicas": 5}


# ----- strategic merge patch -----


def test_kubectl_set_image_patch() -> None:
    """`kubectl set image deployment/web web=shop/web:2.0` sends this body."""
    body = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                                           "containers": [{"image": "shop/web:2.0", "name": "web"}]}}}}
    patched = strategic_merge_patch(deployment(), body, kind="Deployment")
    assert [c["image"] for c in containers(patched)] == ["shop/web:2.0", "envoy:1.30"]
    assert containers(patched)[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], \
        "fields of the merged container that the patch does not name are kept"
    assert "$setElementOrder/containers" not in patched["spec"]["template"]["spec"]


def test_kubectl_rollout_pause_resume_restart_patches() -> None:
    paused = strategic_merge_patch(deployment(), {"spec": {"paused": True}}, kind="Deployment")
    assert paused["spec"]["paused"] is True
    resumed = strategic_merge_patch(paused, {"spec": {"paused": None}}, kind="Deployment")
    assert "paused" not in resumed["spec"]
    restarted = strategic_merge_patch(deployment(), {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-03-01T10:00:00Z"}}}}}, kind="Deployment")
    assert restarted["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-03-01T10:00:00Z"}}


def test_kubectl_apply_second_apply_patch() -> None:
    """What `kubectl apply` sends when the manifest changed the image, dropped env B and added a port."""
    last_applied = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment"})
    body = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 9090}],
                "env": [{"$patch": "delete", "name": "B"}],
                "image": "shop/web:2.0",
                "name": "web",
                "ports": [{"containerPort": 9090, "name": "metrics"}],
            }],
        }}},
    }
    patched = strategic_merge_patch(deployment(), body, kind="Deployment")
    web = containers(patched)[0]
    assert web["image"] == "shop/web:2.0"
    assert web["env"] == [{"name": "A", "value": "1"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}]
    assert patched["metadata"]["annotations"] == {
        "team": "payments", "kubectl.kubernetes.io/last-applied-configuration": last_applied}


def test_strategic_merge_directives() -> None:
    base = deployment()
    replaced = strategic_merge_patch(base, {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]}}}}, kind="Deployment")
    assert containers(replaced) == [{"name": "solo", "image": "solo:1"}]

    map_replaced = strategic_merge_patch(base, {"spec": {"selector": {"$patch": "replace",
                                                                      "matchLabels": {"x": "y"}}}})
    assert map_replaced["spec"]["selector"] == {"matchLabels": {"x": "y"}}

    deleted = strategic_merge_patch(base, {"status": {"$patch": "delete"}})
    assert "status" not in deleted

    recreate = strategic_merge_patch(base, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}

    fewer = strategic_merge_patch(base, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert fewer["metadata"]["finalizers"] == []

    more = strategic_merge_patch(base, {"metadata": {"finalizers": ["b", "a"]}})
    assert more["metadata"]["finalizers"] == ["a", "b"], "finalizers merge as a set"

    condition = strategic_merge_patch(base, {"status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}})
    assert condition["status"]["conditions"] == [
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]


def test_strategic_merge_orders_by_set_element_order() -> None:
    body = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}
    patched = strategic_merge_patch(deployment(), body, kind="Deployment")
    assert [c["name"] for c in containers(patched)] == ["sidecar", "web"]


def test_strategic_merge_service_ports_merge_by_port() -> None:
    service = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}
    patched = strategic_merge_patch(service, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}},
                                    kind="Service")
    assert patched["spec"]["ports"] == [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}]


def test_strategic_merge_new_values_lose_directives_and_nulls() -> None:
    patched = strategic_merge_patch({"spec": {}}, {"spec": {"template": {"metadata": {"labels": {"a": None}},
                                                                         "$retainKeys": ["metadata"]}}})
    assert patched == {"spec": {"template": {"metadata": {"labels": {}}}}}


def test_strategic_merge_rejects_items_without_merge_key() -> None:
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(deployment(), [{"op": "add"}])
    assert caught.value.bad_request is True
