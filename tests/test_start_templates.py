"""Comparing pod templates (which ReplicaSet is a Deployment's new one) is cheap and still exact.

`templates_equal` must answer exactly what comparing the normalised templates answers (the hash label
ignored, null and empty values as absent, as the Deployment controller compares them), for templates
written every which way; and the common case at start — a ReplicaSet's template is its Deployment's plus
the hash label — must not copy and normalise both templates.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from daemon.kube import rollout_state
from daemon.kube.rollout_state import new_replica_set, rollout_identity, templates_equal

_EMPTY: list[Any] = [None, "", {}, [], "absent"]


def _template(rng: random.Random, *, image: str) -> dict[str, Any]:
    """A pod template with each optional part written one of the ways a client may write "nothing"."""
    def maybe(target: dict[str, Any], key: str, value: Any) -> None:
        choice = rng.choice([*_EMPTY, value, value])
        if choice != "absent":
            target[key] = choice

    container: dict[str, Any] = {"name": "web"}
    maybe(container, "image", image)
    maybe(container, "args", ["--port", "8000"])
    maybe(container, "env", [{"name": "MODE", "value": rng.choice(["", "fast"])}])
    maybe(container, "ports", [{"containerPort": 8000, "protocol": "TCP"}])
    spec: dict[str, Any] = {"containers": [container]}
    maybe(spec, "nodeSelector", {"disk": "ssd"})
    maybe(spec, "terminationGracePeriodSeconds", 30)
    labels: dict[str, Any] = {"app": "web"}
    if rng.random() < 0.5:
        labels["pod-template-hash"] = rng.choice(["abc", "def"])
    metadata: dict[str, Any] = {}
    maybe(metadata, "labels", labels)
    maybe(metadata, "annotations", {"team": "shop"})
    template: dict[str, Any] = {"spec": spec}
    maybe(template, "metadata", metadata)
    return template


def _normalised_equal(a: Any, b: Any) -> bool:
    return bool(rollout_state._normalised_template(a) == rollout_state._normalised_template(b))


def test_equal_exactly_when_the_normalised_templates_are() -> None:
    rng = random.Random(21)
    answers = {True: 0, False: 0}
    for _ in range(20_000):
        a = _template(rng, image=rng.choice(["web:1", "web:2"]))
        b = _template(rng, image=rng.choice(["web:1", "web:2"]))
        expected = _normalised_equal(a, b)
        assert templates_equal(a, b) is expected, (a, b)
        answers[expected] += 1
    assert min(answers.values()) > 500, answers


@pytest.mark.parametrize(("a", "b", "equal"), [
    ({"spec": {"containers": [{"image": ""}]}}, {"spec": {"containers": [{}]}}, True),
    ({"spec": {"containers": [{"image": {"x": ""}}]}}, {"spec": {"containers": [{}]}}, True),
    ({"spec": {"containers": ({"image": "a"},)}}, {"spec": {"containers": [{"image": "a"}]}}, True),
    ({"spec": {"containers": [{"image": "a"}, {"image": "b"}]}}, {"spec": {"containers": [{"image": "a"}]}}, False),
    ({"spec": {"containers": [{"image": "a"}]}}, {"spec": {"containers": [{"image": "b"}]}}, False),
    ({"spec": {"containers": None}}, {"spec": {}}, True),
    ({"spec": {"containers": ["odd"]}}, {"spec": {"containers": ["odd"]}}, True),
    (None, {}, False),
    ({}, {"metadata": {"labels": {"pod-template-hash": "x"}}}, True),
])
def test_templates_written_differently(a: Any, b: Any, equal: bool) -> None:
    assert templates_equal(a, b) is equal
    assert _normalised_equal(a, b) is equal


def test_a_replicaset_of_the_deployment_is_found_without_normalising(monkeypatch: pytest.MonkeyPatch) -> None:
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:2", "imagePullPolicy": "IfNotPresent"}]}}
    deployment = {"metadata": {"namespace": "shop", "name": "web", "uid": "u1",
                               "annotations": {"deployment.kubernetes.io/revision": "2"}},
                  "spec": {"template": template}}

    def replica_set(name: str, revision: int, image: str) -> dict[str, Any]:
        labels = {"app": "web", "pod-template-hash": name}
        return {"metadata": {"namespace": "shop", "name": f"web-{name}", "labels": labels,
                             "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                             "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u1",
                                                  "controller": True}]},
                "spec": {"template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{**template["spec"]["containers"][0],  # type: ignore[index]
                                                               "image": image}]}}}}

    old, new = replica_set("aaa", 1, "web:1"), replica_set("bbb", 2, "web:2")
    normalised: list[object] = []
    original = rollout_state._drop_empty

    def counting(value: object) -> object:
        normalised.append(value)
        return original(value)

    monkeypatch.setattr(rollout_state, "_drop_empty", counting)
    assert new_replica_set(deployment, [old, new]) is new
    assert rollout_identity(deployment, [old, new]) == rollout_state.RolloutId("shop", "web", 2, "bbb")
    assert normalised == [], "plain templates are compared without copying them"
