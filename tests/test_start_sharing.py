"""A listed page is shared in one pass (`share_page`): recurring parts and pod specs first, then strings, not
walking again a part replaced by one already held. The objects come out as they did with strings shared
first: equal to what was decoded (less what `trimmed` drops), the same parts held once, every short string
interned."""

from __future__ import annotations

import json
import sys
from typing import Any

from daemon.kube.sharing import (
    CommonValues,
    PodSpecPool,
    deployment_of,
    share_common,
    share_page,
    share_strings,
    trimmed,
)

Obj = dict[str, Any]
NAMESPACES = ("shop", "pay")


def _pod(i: int, image: str) -> Obj:
    resources: Obj = [{}, {"limits": {"cpu": "1", "memory": "1Gi"}}, {"requests": {"cpu": 0.5}}][i % 3]
    containers = [{"name": "web", "image": image, "imagePullPolicy": "IfNotPresent", "resources": resources,
                   "ports": [{"name": "http", "containerPort": 8000 + i % 2, "protocol": "TCP"}]}]
    if i % 5 == 0:
        containers.append({"name": "proxy", "image": "proxy:2", "args": ["--port", str(9000 + i), "-v"],
                           "resources": {}})
    return {"containers": containers, "restartPolicy": "Always", "securityContext": {} if i % 7 else {"runAsUser": 1},
            "terminationGracePeriodSeconds": 30}


def _deployment(i: int) -> Obj:
    name, namespace = f"web-{i:04d}", NAMESPACES[i % 2]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{i}", "resourceVersion": str(100 + i),
                         "labels": {"app": name}, "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                         "annotations": {"deployment.kubernetes.io/revision": "2",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 300 + "}"}},
            "spec": {"replicas": i % 4, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": _pod(i, f"shop/web:{i % 3}")},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1 if i % 6 else "25%"}}},
            "status": {"observedGeneration": 1, "replicas": i % 4, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": f"rs {i}"}]}}


def _replica_set(i: int, hash_: str, image: str, revision: str) -> Obj:
    name, namespace = f"web-{i:04d}", NAMESPACES[i % 2]
    labels = {"app": name, "pod-template-hash": hash_}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-{hash_}", "namespace": namespace, "uid": f"rs-{i}-{hash_}",
                         "labels": labels, "managedFields": [{"manager": "kube-controller-manager"}],
                         "annotations": {"deployment.kubernetes.io/revision": revision,
                                         "deployment.kubernetes.io/desired-replicas": str(i % 4)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                              "uid": f"uid-{i}", "controller": True}]},
            "spec": {"replicas": i % 4, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": _pod(i, image)}},
            "status": {"replicas": i % 4, "observedGeneration": 1}}


def _pages() -> list[tuple[str, bytes]]:
    """Pages of JSON as the API server sends them, Deployments' and ReplicaSets' interleaved (some
    ReplicaSets listed before their Deployment); every fourth Deployment also has an old ReplicaSet."""
    deployments = [_deployment(i) for i in range(600)]
    replica_sets = [_replica_set(i, "cur", f"shop/web:{i % 3}", "2") for i in range(600)]
    replica_sets += [_replica_set(i, "old", "shop/web:old", "1") for i in range(0, 600, 4)]
    chunks = [(plural, objs[start:start + 250]) for plural, objs in (("deployments", deployments),
                                                                      ("replicasets", replica_sets))
              for start in range(0, len(objs), 250)]
    order = [chunks[3], chunks[0], chunks[1], chunks[4], chunks[5], chunks[2]]
    return [(plural, json.dumps({"items": items}).encode()) for plural, items in order]


def _sharing_strings_first(items: list[Obj], pool: PodSpecPool, common: CommonValues, deployments: bool) -> None:
    """How a page was shared before `share_page`: strings, then recurring parts, then pod specs."""
    share_strings(trimmed(items))
    for item in items:
        share_common(item, common, is_deployment=deployments)
    for item in items:
        owner = str(item["metadata"]["name"]) if deployments else deployment_of(item)
        pool.share(item, deployment=owner, is_deployment=deployments)


def _shape(objects: list[Obj]) -> list[Any]:
    """Which containers are one object, as first-seen numbers along a walk of `objects` in order."""
    numbers: dict[int, int] = {}
    shape: list[Any] = []

    def walk(value: Any) -> None:
        if type(value) in (dict, list):
            known = id(value) in numbers
            shape.append(numbers.setdefault(id(value), len(numbers)))
            if not known:
                for item in value.values() if type(value) is dict else value:
                    walk(item)

    for obj in objects:
        walk(obj)
    return shape


def _strings(value: Any) -> list[str]:
    if type(value) is dict:
        return [s for item in value.values() for s in _strings(item)]
    if type(value) is list:
        return [s for item in value for s in _strings(item)]
    return [value] if type(value) is str else []


def test_a_page_shared_in_one_pass_is_what_sharing_strings_first_gave() -> None:
    pages = _pages()
    before: list[Obj] = []
    after: list[Obj] = []
    decoded: list[Obj] = []
    old = (PodSpecPool(), CommonValues())
    new = (PodSpecPool(), CommonValues())
    for plural, body in pages:
        deployments = plural == "deployments"
        items = json.loads(body)["items"]
        _sharing_strings_first(items, *old, deployments)
        before += items
        items = trimmed(json.loads(body)["items"])
        share_page(items, is_deployment=deployments, pod_specs=new[0], common=new[1])
        after += items
        decoded += trimmed(json.loads(body)["items"])

    assert after == decoded, "sharing changes no value"
    assert after == before
    assert _shape(after) == _shape(before), "the same parts are held once"
    current = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in after}
    for i in range(0, 600, 50):
        key = (NAMESPACES[i % 2], f"web-{i:04d}")
        rs = current[(key[0], f"{key[1]}-cur")]
        assert rs["spec"]["template"]["spec"] is current[key]["spec"]["template"]["spec"]
    short = [s for obj in after for s in _strings(obj) if len(s) <= 256]
    assert short
    assert all(sys.intern(s) is s for s in short), "every short string is interned"


def test_values_held_for_later_objects_have_their_strings_interned() -> None:
    # A ReplicaSet's securityContext is held (its runAsUser written 1.0: another value than its Deployment's 1
    # for `CommonValues`), then its whole pod spec is replaced by its Deployment's, equal by ==: the
    # ReplicaSet's own copy is never walked with the object. A later object given the held value must still
    # find its strings interned.
    def with_context(obj: Obj, user: float) -> list[Obj]:
        obj["spec"]["template"]["spec"]["securityContext"] = {"seLinuxOptions": {"level": "s0:c1,c2"},
                                                              "runAsUser": user}
        return trimmed([json.loads(json.dumps(obj))])

    pool, common = PodSpecPool(), CommonValues()
    share_page(with_context(_deployment(1), 1), is_deployment=True, pod_specs=pool, common=common)
    share_page(with_context(_replica_set(1, "cur", "shop/web:1", "2"), 1.0), is_deployment=False,
               pod_specs=pool, common=common)
    later = with_context(_replica_set(2, "cur", "shop/web:2", "2"), 1.0)
    share_page(later, is_deployment=False, pod_specs=pool, common=common)
    level = later[0]["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"]["level"]
    assert level == "s0:c1,c2"
    assert sys.intern(level) is level, "a held value's strings are interned"
