"""The simulated store finds an owner's objects by its uid: `Store.controlled_by` answers exactly what
filtering the namespace's list by controller ownerReference answers (what the Deployment controller did on
every pass, reading every ReplicaSet of the namespace), whatever the writes do to the references."""

from __future__ import annotations

import random
from typing import Any

from sim.controllers.replicaset import is_controlled_by
from sim.resources import NAMESPACES, REPLICASETS
from sim.store import ApiError, Store

OWNERS = ["uid-a", "uid-b", "uid-c"]
NAMESPACE_NAMES = ["one", "two"]


def _scan(store: Store, namespace: str, uid: str) -> list[dict[str, Any]]:
    items, _ = store.list_objects(REPLICASETS, namespace)
    return [rs for rs in items if is_controlled_by(rs, {"metadata": {"uid": uid}})]


def _references(rng: random.Random) -> list[dict[str, Any]]:
    """No references, a controller, a non-controller before or after it, two controllers, one without uid."""
    refs: list[dict[str, Any]] = []
    for _ in range(rng.randrange(4)):
        ref: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}
        if rng.random() < 0.9:
            ref["uid"] = rng.choice(OWNERS)
        if rng.random() < 0.6:
            ref["controller"] = rng.random() < 0.8
        refs.append(ref)
    return refs


def test_the_owner_index_answers_what_a_scan_of_the_namespace_answers(store: Store) -> None:
    rng = random.Random(21)
    for namespace in NAMESPACE_NAMES:
        store.create(NAMESPACES, {"metadata": {"name": namespace}})
    checked = 0
    for step in range(1500):
        namespace = rng.choice(NAMESPACE_NAMES)
        name = f"rs-{rng.randrange(12)}"
        stored = store.peek(REPLICASETS, namespace, name)
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        refs = _references(rng)
        if refs:
            meta["ownerReferences"] = refs
        try:
            if stored is None:
                store.create(REPLICASETS, {"metadata": meta, "spec": {"replicas": step % 3}})
            elif rng.random() < 0.3:
                store.delete(REPLICASETS, namespace, name)
            elif rng.random() < 0.2:
                # A write that changes nothing but the spec keeps the references.
                store.replace(REPLICASETS, {**stored, "spec": {"replicas": step % 5}}, namespace=namespace,
                              name=name)
            else:
                store.replace(REPLICASETS, {"metadata": meta, "spec": stored.get("spec")}, namespace=namespace,
                              name=name, expect_rv=stored["metadata"]["resourceVersion"])
        except ApiError as err:  # pragma: no cover - the sequence never makes an invalid write
            raise AssertionError(f"step {step}: {err}") from err
        for ns in NAMESPACE_NAMES:
            for uid in OWNERS:
                indexed = store.controlled_by(REPLICASETS, ns, uid)
                assert indexed == _scan(store, ns, uid), (step, ns, uid)
                checked += len(indexed)
    assert checked > 1000, "the sequence must leave owned objects to compare"


def test_a_stored_object_is_found_under_its_new_controller_only(store: Store) -> None:
    store.create(NAMESPACES, {"metadata": {"name": "one"}})
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "controller": True}
    store.create(REPLICASETS, {"metadata": {"name": "rs", "namespace": "one",
                                            "ownerReferences": [{**ref, "uid": "uid-a"}]}})
    stored = store.get(REPLICASETS, "one", "rs")
    stored["metadata"]["ownerReferences"] = [{**ref, "uid": "uid-b"}]
    store.replace(REPLICASETS, stored, namespace="one", name="rs")

    assert store.controlled_by(REPLICASETS, "one", "uid-a") == []
    assert [rs["metadata"]["name"] for rs in store.controlled_by(REPLICASETS, "one", "uid-b")] == ["rs"]
    store.delete(REPLICASETS, "one", "rs")
    assert store.controlled_by(REPLICASETS, "one", "uid-b") == []
