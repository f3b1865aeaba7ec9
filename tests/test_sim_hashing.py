"""pod-template-hash and template equality, as the simulated Deployment controller uses them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sim.controllers.hashing import (
    SAFE_ALPHABET,
    fnv1a_32,
    normalise,
    quick_equal,
    random_suffix,
    safe_encode,
    template_hash,
    template_without_hash,
    templates_equal,
)


def template(image: str = "nginx:1.25", **labels: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web", **labels}},
            "spec": {"containers": [{"name": "web", "image": image}]}}


def test_fnv1a_32_matches_the_reference_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_safe_encode_maps_decimal_digits_as_the_spec_says() -> None:
    # Spec 1.3: 0→4 1→5 2→6 3→7 4→8 5→9 6→b 7→c 8→d 9→f.
    assert safe_encode("0123456789") == "456789bcdf"


def test_hash_is_short_safe_and_deterministic() -> None:
    value = template_hash(template())
    assert 1 <= len(value) <= 10, value
    assert set(value) <= set(SAFE_ALPHABET), value
    assert template_hash(template()) == value
    assert template_hash(template("nginx:1.26")) != value


def test_hash_ignores_pod_template_hash_label_and_empty_values() -> None:
    plain = template()
    labelled = template(**{"pod-template-hash": "abc"})
    undone = {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
              "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "resources": {}}]}}
    assert template_hash(labelled) == template_hash(plain)
    assert template_hash(undone) == template_hash(plain)


def test_collision_count_changes_the_hash() -> None:
    base = template_hash(template())
    assert template_hash(template(), 0) != base, "a non-nil count of 0 is still hashed, as upstream does"
    assert len({base, template_hash(template(), 0), template_hash(template(), 1), template_hash(template(), 2)}) == 4


def test_normalise_drops_null_and_empty_values_recursively_but_keeps_false_and_zero() -> None:
    raw = {"a": None, "b": {}, "c": [], "d": "", "e": {"f": {"g": None}}, "h": False, "i": 0,
           "j": [{}, {"k": None, "l": 1}]}
    assert normalise(raw) == {"h": False, "i": 0, "j": [{}, {"l": 1}]}


def test_template_copied_back_by_undo_equals_the_original() -> None:
    stored = template(**{"pod-template-hash": "7c5ddbdf54"})
    # kubectl rollout undo marshals the RS template from a typed struct, minus the hash label.
    undo = {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "resources": {},
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                     "securityContext": {}, "schedulerName": "default-scheduler"}}
    assert templates_equal(stored, undo)
    assert not templates_equal(stored, template("nginx:1.24"))


@pytest.mark.parametrize("changed", [
    {"metadata": {"labels": {"app": "web", "track": "canary"}}},
    {"metadata": {"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01"}}},
])
def test_label_and_annotation_changes_make_a_different_template(changed: dict[str, Any]) -> None:
    other = {**template(), **changed}
    assert not templates_equal(template(), other)
    assert template_hash(template()) != template_hash(other)


def test_random_suffix_uses_the_safe_alphabet() -> None:
    suffix = random_suffix(5, rng=random.Random(7))
    assert len(suffix) == 5
    assert set(suffix) <= set(SAFE_ALPHABET)


def _variant(rng: random.Random, base: dict[str, Any]) -> dict[str, Any]:
    """`base` rewritten one of the ways a template reaches the controller: the hash label, empty and
    defaulted values written out, another image (empty too), another label, a second container."""
    variant: dict[str, Any] = {"metadata": {"labels": dict(base["metadata"]["labels"])},
                               "spec": {"containers": [dict(c) for c in base["spec"]["containers"]]}}
    container = variant["spec"]["containers"][0]
    for _ in range(rng.randrange(4)):
        change = rng.randrange(9)
        if change == 0:
            variant["metadata"]["labels"]["pod-template-hash"] = rng.choice(["abc", "def", ""])
        elif change == 1:
            variant["metadata"]["creationTimestamp"] = None
        elif change == 2:
            container["resources"] = {}
        elif change == 3:
            container["image"] = rng.choice(["nginx:1.25", "nginx:1.26", ""])
        elif change == 4:
            variant["metadata"]["labels"]["tier"] = rng.choice(["a", "b", ""])
        elif change == 5:
            variant["spec"]["restartPolicy"] = rng.choice(["Always", "Never"])
        elif change == 6:
            container["imagePullPolicy"] = rng.choice(["IfNotPresent", "Always"])
        elif change == 7:
            variant["spec"]["containers"].append({"name": "side", "image": rng.choice(["busybox", ""])})
        else:
            variant["metadata"]["labels"] = {"pod-template-hash": "abc"}
    return variant


def test_the_quick_answers_agree_with_the_full_comparison() -> None:
    rng = random.Random(7)
    answered = {True: 0, False: 0}
    for _ in range(5000):
        a, b = _variant(rng, template()), _variant(rng, template())
        quick = quick_equal(a, b)
        full = template_without_hash(a) == template_without_hash(b)
        if quick is not None:
            assert quick == full, (a, b)
            answered[quick] += 1
        assert templates_equal(a, b) == full, (a, b)
    assert min(answered.values()) > 200, answered
