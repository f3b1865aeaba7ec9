"""Label and field selectors of the simulated API server, as pure functions."""

from __future__ import annotations

import pytest

from sim.resources import DEPLOYMENTS, EVENTS, EVENTS_V1, PODS
from sim.selectors import (
    label_selector_string,
    parse_field_selector,
    parse_label_selector,
    selector_matches,
)
from sim.store import ApiError

LABELS = {"app": "web", "tier": "frontend", "track": "stable", "rank": "7"}


@pytest.mark.parametrize(("text", "expected"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=api", False),
    ("app!=api", True),
    ("missing!=x", True),
    ("app!=web", False),
    ("tier in (frontend, backend)", True),
    ("tier in (backend)", False),
    ("tier notin (backend)", True),
    ("missing notin (x)", True),
    ("tier notin (frontend)", False),
    ("track", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=frontend,!canary", True),
    ("app=web,tier=backend", False),
    ("rank>5", True),
    ("rank<5", False),
    ("  app = web , track  ", True),
])
def test_label_selector_text(text: str, expected: bool) -> None:
    assert parse_label_selector(text)(LABELS) is expected, text


def test_label_selector_empty_value_matches_empty_label() -> None:
    assert parse_label_selector("flag=")({"flag": ""}) is True
    assert parse_label_selector("flag=")({"flag": "x"}) is False


@pytest.mark.parametrize(("text", "message"), [
    ("app in web", "unable to parse requirement: found 'web', expected: '('"),
    ("app=web,", "found '', expected: identifier after ','"),
    ("app in ()", "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty"),
    ("app=web tier=x", "found 'tier', expected: ',' or 'end of string'"),
    ("rank>x", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: 'x'"),
])
def test_label_selector_errors_are_bad_requests(text: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector(text)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (400, "BadRequest", message)


def test_label_selector_rejects_bad_key() -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector("-bad=x")
    assert caught.value.code == 400
    assert caught.value.message.startswith('unable to parse requirement: key: Invalid value: "-bad": name part must')


def test_selector_object_match_labels_and_expressions() -> None:
    selector = {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                                     {"key": "canary", "operator": "DoesNotExist"},
                                     {"key": "track", "operator": "Exists"},
                                     {"key": "zone", "operator": "NotIn", "values": ["eu"]}]}
    assert selector_matches(selector, LABELS) is True
    assert selector_matches(selector, {**LABELS, "canary": "1"}) is False
    assert selector_matches(selector, {**LABELS, "tier": "backend"}) is False
    assert selector_matches(selector, {**LABELS, "zone": "eu"}) is False
    assert selector_matches({}, {}) is True, "an empty selector matches everything"


def test_selector_object_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match='"Near" is not a valid label selector operator'):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, {})


def test_selector_string_is_sorted_like_kubectl_prints_it() -> None:
    selector = {"matchLabels": {"tier": "web", "app": "shop"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                     {"key": "zz", "operator": "DoesNotExist"}]}
    assert label_selector_string(selector) == "app=shop,env in (dev,prod),tier=web,!zz"
    assert label_selector_string(None) == "<none>"


def _pod(name: str, phase: str, node: str = "") -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": {"nodeName": node}, "status": {"phase": phase}}


def test_field_selectors_for_pods() -> None:
    running = parse_field_selector("status.phase=Running,spec.nodeName!=node-2", PODS)
    assert running(_pod("a", "Running", "node-1")) is True
    assert running(_pod("b", "Running", "node-2")) is False
    assert running(_pod("c", "Pending", "node-1")) is False
    unscheduled = parse_field_selector("spec.nodeName=", PODS)
    assert unscheduled(_pod("d", "Pending")) is True
    assert parse_field_selector("metadata.name==a", PODS)(_pod("a", "Running")) is True
    assert parse_field_selector("metadata.namespace=other", PODS)(_pod("a", "Running")) is False


def test_field_selectors_for_both_event_shapes() -> None:
    core = {"metadata": {"name": "e", "namespace": "shop"}, "reason": "ScalingReplicaSet", "type": "Normal",
            "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "shop", "uid": "u-1"},
            "source": {"component": "deployment-controller"}}
    selector = parse_field_selector(
        "involvedObject.kind=Deployment,involvedObject.name=web,involvedObject.namespace=shop,"
        "involvedObject.uid=u-1,reason=ScalingReplicaSet,type=Normal,source=deployment-controller", EVENTS)
    assert selector(core) is True
    v1 = {"metadata": {"name": "e"}, "regarding": {"kind": "Deployment", "name": "web"},
          "reportingController": "rollguard", "type": "Warning"}
    assert parse_field_selector("regarding.name=web,reportingController=rollguard,type=Warning", EVENTS_V1)(v1)


def test_field_selector_escapes() -> None:
    obj = {"metadata": {"name": "a,b=c"}}
    assert parse_field_selector(r"metadata.name=a\,b\=c", DEPLOYMENTS)(obj) is True


@pytest.mark.parametrize(("text", "rt", "message"), [
    ("spec.replicas=3", DEPLOYMENTS, "field label not supported: spec.replicas"),
    ("status.phase=Running", DEPLOYMENTS, "field label not supported: status.phase"),
    ("regarding.name=web", EVENTS, "field label not supported: regarding.name"),
    ("metadata.name", PODS, "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
])
def test_unsupported_field_selectors(text: str, rt: object, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_field_selector(text, rt)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.message) == (400, message)
