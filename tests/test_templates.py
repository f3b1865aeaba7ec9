"""Templates: values land escaped for PromQL strings and URL positions; bad templates are found before use."""

from __future__ import annotations

import re

import pytest

from daemon.measurement import SignalContext
from daemon.rules.templates import Language, TemplateError, check_template, render_promql, render_url

VARIABLES = SignalContext(
    namespace="staging",
    deployment="backend",
    revision=7,
    pod_template_hash="5d8f7c9b6",
    pod_prefix="backend-5d8f7c9b6-",
    labels={"app": "backend", "team/owner": "a b"},
    rollout_started_at=1_700_000_000.0,
).template_variables()


def _unescape_promql(literal: str) -> str:
    """Decode the inside of a double-quoted PromQL string (the escapes render_promql writes)."""
    return re.sub(r"\\(x[0-9a-f]{2}|.)", lambda m: _ESCAPES.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), literal)


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def test_context_variables_include_labels() -> None:
    assert VARIABLES == {
        "namespace": "staging",
        "deployment": "backend",
        "revision": "7",
        "podTemplateHash": "5d8f7c9b6",
        "podPrefix": "backend-5d8f7c9b6-",
        "labels.app": "backend",
        "labels.team/owner": "a b",
    }


def test_promql_renders_plain_values() -> None:
    query = 'sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code=~"5.."}[1m]))'
    assert render_promql(query, VARIABLES) == (
        'sum(rate(http_requests_total{namespace="staging",pod=~"backend-5d8f7c9b6-.*",code=~"5.."}[1m]))'
    )


def test_promql_injection_through_a_namespace_stays_inside_the_string() -> None:
    evil = 'x"} or vector(1) #'
    rendered = render_promql('up{namespace="{{namespace}}"}', {"namespace": evil})
    assert rendered == 'up{namespace="x\\"} or vector(1) #"}'
    literal = re.fullmatch(r'up\{namespace="((?:[^"\\]|\\.)*)"\}', rendered)
    assert literal is not None, "the value must stay one string literal"
    assert _unescape_promql(literal.group(1)) == evil


def test_promql_regex_matcher_values_are_regex_escaped_then_string_escaped() -> None:
    evil = 'web.*|.*"\\'
    rendered = render_promql('up{pod=~"{{podPrefix}}.*"}', {"podPrefix": evil})
    assert rendered == 'up{pod=~"web\\\\.\\\\*\\\\|\\\\.\\\\*\\"\\\\\\\\.*"}'
    literal = re.fullmatch(r'up\{pod=~"((?:[^"\\]|\\.)*)"\}', rendered)
    assert literal is not None
    regex = _unescape_promql(literal.group(1))
    # The decoded regex matches the value literally and nothing wider.
    assert re.fullmatch(regex, evil + "-abc")
    assert not re.fullmatch(regex, "web-anything")


def test_promql_negative_regex_matchers_are_escaped_too() -> None:
    assert render_promql('up{pod!~"{{podPrefix}}"}', {"podPrefix": "a.b"}) == 'up{pod!~"a\\\\.b"}'


def test_promql_equality_matchers_are_not_regex_escaped() -> None:
    assert render_promql('up{pod="{{podPrefix}}"}', {"podPrefix": "a.b"}) == 'up{pod="a.b"}'


def test_promql_control_characters_are_escaped() -> None:
    assert render_promql("up{a='{{namespace}}'}", {"namespace": "x'\n\ty\x01"}) == "up{a='x\\'\\n\\ty\\x01'}"


def test_promql_raw_string_refuses_a_backtick() -> None:
    with pytest.raises(TemplateError, match="contains a backtick"):
        render_promql("up{a=`{{namespace}}`}", {"namespace": "x`"})


def test_promql_placeholder_outside_a_string_is_refused() -> None:
    assert check_template("up > {{revision}}", Language.PROMQL) == [
        '{{revision}} must sit inside a quoted PromQL string, for example namespace="{{revision}}", '
        "where its value is escaped"
    ]


def test_promql_placeholder_in_a_comment_is_refused() -> None:
    assert check_template('up{a="b"} # {{namespace}}', Language.PROMQL) == [
        "{{namespace}} must sit inside a quoted PromQL string"
    ]


def test_unknown_variable_is_named_with_the_known_ones() -> None:
    assert check_template('up{a="{{nope}}"}', Language.PROMQL) == [
        "unknown template variable {{nope}} (known: {{namespace}}, {{deployment}}, {{revision}}, "
        "{{podTemplateHash}}, {{podPrefix}}, {{labels.KEY}})"
    ]


def test_unbalanced_braces_are_found() -> None:
    assert check_template('up{a="{{namespace}"}', Language.PROMQL) == [
        "unbalanced {{ or }} (a placeholder is written {{name}})"
    ]


def test_missing_label_has_a_clear_render_error() -> None:
    with pytest.raises(TemplateError) as caught:
        render_promql('up{a="{{labels.tier}}"}', VARIABLES)
    assert str(caught.value) == "{{labels.tier}} has no value: the pod template has no label 'tier'"


def test_url_renders_host_and_path() -> None:
    assert (
        render_url("http://{{deployment}}.{{namespace}}:8000/health", VARIABLES) == "http://backend.staging:8000/health"
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("a/b", "a%2Fb"), ("x?y=1", "x%3Fy%3D1"), ("u@evil.example", "u%40evil.example"), ("a b#c&d", "a%20b%23c%26d")],
)
def test_url_path_and_query_values_are_percent_encoded(value: str, encoded: str) -> None:
    template = "http://svc:8000/items/{{labels.app}}?owner={{labels.app}}"
    assert render_url(template, {"labels.app": value}) == f"http://svc:8000/items/{encoded}?owner={encoded}"


@pytest.mark.parametrize("value", ["evil.example/x", "a@b", "Staging", "x?y", "-a", "a" * 64])
def test_url_host_values_must_be_rfc1123_labels(value: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_url("http://backend.{{namespace}}:8000/", {"namespace": value})
    assert str(caught.value) == (
        f"{{{{namespace}}}} = {value!r} cannot be part of a host name "
        "(it must be an RFC 1123 label: lowercase letters, digits and '-', at most 63)"
    )


def test_url_port_values_must_be_digits() -> None:
    assert render_url("http://svc:{{revision}}/", {"revision": "8080"}) == "http://svc:8080/"
    with pytest.raises(TemplateError, match="is not a port number"):
        render_url("http://svc:{{revision}}/", {"revision": "80@evil"})


def test_url_scheme_and_userinfo_placeholders_are_refused() -> None:
    assert check_template("{{namespace}}://svc/", Language.URL) == ["{{namespace}} cannot be used in the URL scheme"]
    assert check_template("http://{{namespace}}@svc/", Language.URL) == [
        "{{namespace}} cannot be used in the URL user-info"
    ]


def test_ws_url_renders_like_http() -> None:
    assert render_url("ws://backend.{{namespace}}:8000/ws", VARIABLES) == "ws://backend.staging:8000/ws"
