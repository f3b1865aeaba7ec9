"""rules.loader: one data file per failure mode with its exact message, the good files, the shipped examples.

Paths are given relative to tests/data/rules (the tests chdir there), so the messages read exactly as
`rollguard check` prints them.
"""

# ruff: noqa: E501 -- each expected error stays on one line, exactly as `rollguard check` prints it.
from __future__ import annotations

from pathlib import Path

import pytest

from daemon.rules.check import check_paths
from daemon.rules.loader import load_file, load_rules
from daemon.rules.model import (
    Action,
    BaselineMode,
    HttpSignal,
    JsonExpectation,
    LogsSignal,
    PagerDutyTarget,
    PrometheusSignal,
    RollbackJob,
    RuleError,
    SecretKeyRef,
    SlackTarget,
    Unavailable,
    WebSocketSignal,
)

DATA = Path(__file__).parent / "data" / "rules"
REPO = Path(__file__).parent.parent

EXPECTED_ERRORS: dict[str, list[str]] = {
    "unknown-route-kind.yaml": [
        "bad/unknown-route-kind.yaml:17: spec.notify.routes.rollback_executed: unknown alert kind (known: rollout_started, rollout_complete, notify_matched, review_needed, rollout_failed, rollback_started, rollback_completed, rollback_failed, recovered, superseded, review_closed, analysis_error)"
    ],
    "unknown-route-channel.yaml": [
        'bad/unknown-route-channel.yaml:16: spec.notify.routes.review_needed[1]: "email" is not a channel (use slack or pagerduty)'
    ],
    "route-cannot-page.yaml": [
        "bad/route-cannot-page.yaml:16: spec.notify.routes.rollout_started[1]: rollout_started alerts cannot page: PagerDuty has no event for them (pageable: analysis_error, recovered, review_closed, review_needed, rollback_completed, rollback_failed, rollback_started, rollout_failed)"
    ],
    "slack-channel-and-webhook.yaml": [
        "bad/slack-channel-and-webhook.yaml:16: spec.notify.slack: set exactly one of channel (with the daemon's bot token) or webhookFrom: {secret: NAME, key: KEY}"
    ],
    "slack-webhook-without-key.yaml": [
        "bad/slack-webhook-without-key.yaml:16: spec.notify.slack.webhookFrom.key: required field is missing"
    ],
    "bad-duration.yaml": ['bad/bad-duration.yaml:14: spec.rules[2].for: "5 minutes" is not a duration (use 5m)'],
    "bad-json-path.yaml": [
        'bad/bad-json-path.yaml:13: spec.signals.health.http.expectJson.path: "status" is not a JSON path (for example $.status or $.items[0].id)'
    ],
    "bad-resolve-on-recovery.yaml": [
        'bad/bad-resolve-on-recovery.yaml:17: spec.notify.pagerduty.resolveOnRecovery: expected true or false, '
        'got a string ("sometimes")'
    ],
    "bad-on-failure.yaml": [
        'bad/bad-on-failure.yaml:14: spec.onFailure.action: "pass" is not an action (use rollback, review or notify)'
    ],
    "bad-regex-expect.yaml": [
        "bad/bad-regex-expect.yaml:13: spec.signals.health.websocket.expect: invalid regex '[PONG': unterminated character set at position 0"
    ],
    "bad-regex-pattern.yaml": [
        "bad/bad-regex-pattern.yaml:13: spec.signals.health.logs.pattern: invalid regex '(?i)(error|traceback': missing ), unterminated subpattern at position 4"
    ],
    "bad-signal-name.yaml": [
        'bad/bad-signal-name.yaml:12: spec.signals.9lives: "9lives" cannot name a signal (letters, digits and _, not starting with a digit; not a CEL keyword and not "baseline")'
    ],
    "bad-url-scheme.yaml": [
        'bad/bad-url-scheme.yaml:13: spec.signals.health.http.url: "ws://backend.{{namespace}}:8000/health" must start with http:// or https://'
    ],
    "bare-number-duration.yaml": [
        "bad/bare-number-duration.yaml:15: spec.rules[0].for: 30 is not a duration: a number needs a unit (use 30s for 30 seconds)"
    ],
    "baseline-without-baseline.yaml": [
        'bad/baseline-without-baseline.yaml:15: spec.rules[0].when: baseline.error_rate at column 14: signal "error_rate" has no baseline (add baseline: previous to its prometheus query)'
    ],
    "cel-error-in-block-scalar.yaml": [
        'bad/cel-error-in-block-scalar.yaml:13: spec.rules[0].when: unknown signal "helth" at line 2 column 7 (did you mean health? known signals: health)'
    ],
    "cel-syntax-error.yaml": [
        "bad/cel-syntax-error.yaml:15: spec.rules[0].when: syntax error at column 13: extraneous input '>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"
    ],
    "cel-type-error.yaml": [
        "bad/cel-type-error.yaml:15: spec.rules[0].when: type error at column 12: operator > cannot be applied to (double, string)"
    ],
    "duplicate-key.yaml": ["bad/duplicate-key.yaml:9: spec.selector.namespaces: duplicate key (first at line 8)"],
    "duplicate-policy-in-file.yaml": [
        'bad/duplicate-policy-in-file.yaml:18: metadata.name: policy "duplicate-policy-in-file" is already defined at line 2'
    ],
    "duplicate-policy-name": [
        'bad/duplicate-policy-name/b.yaml:2: metadata.name: policy "backend" is already defined at bad/duplicate-policy-name/a.yaml:2'
    ],
    "duplicate-rule-name.yaml": [
        'bad/duplicate-rule-name.yaml:16: spec.rules[1].name: duplicate rule name "errors" (first at line 15)'
    ],
    "empty-rules.yaml": ["bad/empty-rules.yaml:14: spec.rules: a policy needs at least one rule"],
    "invalid-yaml.yaml": [
        "bad/invalid-yaml.yaml:9: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'"
    ],
    "many-errors.yaml": [
        "bad/many-errors.yaml:7: spec.analysis.interval: 15 is not a duration: a number needs a unit (use 15s for 15 seconds)",
        "bad/many-errors.yaml:10: spec.signals.error_rate.prometheus.query: unknown template variable {{namespce}} (known: {{namespace}}, {{deployment}}, {{revision}}, {{podTemplateHash}}, {{podPrefix}}, {{labels.KEY}})",
        "bad/many-errors.yaml:12: spec.signals.log_errors.logs.containr: unknown field (did you mean container? known fields: container, pattern)",
        'bad/many-errors.yaml:14: spec.rules[0].for: "1 minute" is not a duration (use 1m)',
        'bad/many-errors.yaml:15: spec.rules[1].when: unknown signal "nope" at column 19 (known signals: error_rate, log_errors)',
        'bad/many-errors.yaml:15: spec.rules[1].action: "page" is not an action (use rollback, review or notify)',
    ],
    "missing-field.yaml": ["bad/missing-field.yaml:16: spec.rules[1].when: required field is missing"],
    "missing-job-command.yaml": [
        "bad/missing-job-command.yaml:14: spec.onRollback.job.command: required field is missing"
    ],
    "no-provider.yaml": [
        "bad/no-provider.yaml:13: spec.signals.health: needs a provider (one of alerts, http, logs, prometheus, websocket)"
    ],
    "non-positive-interval.yaml": [
        'bad/non-positive-interval.yaml:7: spec.analysis.interval: "0s" must be longer than 0s'
    ],
    "not-a-mapping.yaml": [
        "bad/not-a-mapping.yaml:2: expected a RollbackPolicy (a mapping of apiVersion, kind, metadata and spec), got a list"
    ],
    "rollback-on-inconclusive.yaml": [
        "bad/rollback-on-inconclusive.yaml:15: spec.rules[0].onInconclusive: rollback is not allowed here: a signal that cannot be measured must never roll back (use hold, review, notify, ignore, pass)"
    ],
    "rule-action-pass.yaml": [
        'bad/rule-action-pass.yaml:16: spec.rules[1].action: "pass" is not an action (use rollback, review or notify)'
    ],
    "template-outside-string.yaml": [
        'bad/template-outside-string.yaml:11: spec.signals.error_rate.prometheus.query: {{revision}} must sit inside a quoted PromQL string, for example namespace="{{revision}}", where its value is escaped'
    ],
    "two-providers.yaml": [
        "bad/two-providers.yaml:13: spec.signals.health: has 2 providers (http, logs); a signal has exactly one"
    ],
    "unknown-action.yaml": [
        'bad/unknown-action.yaml:15: spec.rules[0].action: "rollbak" is not an action (use rollback, review or notify)'
    ],
    "unknown-field.yaml": [
        "bad/unknown-field.yaml:7: spec.analysis.bakeTim: unknown field (did you mean bakeTime? known fields: bakeTime, initialDelay, interval, pendingGrace, stableMinAge)"
    ],
    "unknown-provider.yaml": [
        "bad/unknown-provider.yaml:13: spec.signals.health.graphite: unknown provider (known providers: alerts, http, logs, prometheus, websocket)"
    ],
    "unknown-signal.yaml": [
        'bad/unknown-signal.yaml:15: spec.rules[0].when: unknown signal "error_rat" at column 1 (did you mean error_rate? known signals: error_rate, health)'
    ],
    "unknown-template-variable.yaml": [
        "bad/unknown-template-variable.yaml:13: spec.signals.health.http.url: unknown template variable {{nope}} (known: {{namespace}}, {{deployment}}, {{revision}}, {{podTemplateHash}}, {{podPrefix}}, {{labels.KEY}})"
    ],
    "unknown-unavailable-choice.yaml": [
        'bad/unknown-unavailable-choice.yaml:15: spec.rules[0].onError: "wait" is not a choice here (use hold, review, notify, ignore, pass)'
    ],
    "unquoted-label-value.yaml": [
        'bad/unquoted-label-value.yaml:8: spec.selector.matchLabels.canary: expected a string, got a boolean (true); quote it: "true"'
    ],
    "when-not-bool.yaml": [
        "bad/when-not-bool.yaml:15: spec.rules[0].when: must be a condition (true or false), but it is a double"
    ],
    "wrong-api-version.yaml": [
        'bad/wrong-api-version.yaml:2: apiVersion: "rollguard.io/v2" is not supported (use rollguard.io/v1)'
    ],
    "wrong-kind.yaml": ['bad/wrong-kind.yaml:3: kind: "Rollout" is not supported (use RollbackPolicy)'],
    "wrong-type.yaml": ['bad/wrong-type.yaml:8: spec.selector.namespaces: expected a list, got a string ("staging")'],
}


@pytest.fixture(autouse=True)
def _in_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)


def test_every_bad_file_has_an_expectation() -> None:
    assert sorted(EXPECTED_ERRORS) == sorted(p.name for p in (DATA / "bad").iterdir())


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_bad_file_reports_exact_errors(name: str) -> None:
    result = load_rules([f"bad/{name}"])
    assert [str(error) for error in result.errors] == EXPECTED_ERRORS[name]
    if name != "duplicate-policy-name":
        assert result.policies == (), "a file with errors contributes no policy"


def test_errors_carry_file_line_and_field() -> None:
    (error,) = load_rules(["bad/bad-duration.yaml"]).errors
    assert error == RuleError(
        "bad/bad-duration.yaml", 14, "spec.rules[2].for", '"5 minutes" is not a duration (use 5m)'
    )


def test_duplicate_policy_keeps_the_first_file() -> None:
    result = load_rules(["bad/duplicate-policy-name"])
    assert [p.name for p in result.policies] == ["backend"]
    assert result.policies[0].source.file == "bad/duplicate-policy-name/a.yaml"


def test_good_directory_loads_every_field() -> None:
    result = load_rules(["good"])
    assert result.errors == ()
    assert result.files == ("good/full.yaml", "good/minimal.yml")
    assert [p.name for p in result.policies] == ["web-production", "web-staging", "minimal"]
    web = result.policies[0]
    assert web.selector.namespaces == ("production", "production-eu")
    assert web.selector.match_labels == {"app": "web", "tier": "frontend"}
    assert web.selector.matches("production", {"app": "web", "tier": "frontend", "x": "y"})
    assert not web.selector.matches("staging", {"app": "web", "tier": "frontend"})
    assert not web.selector.matches("production", {"app": "web"})
    assert (web.analysis.initial_delay, web.analysis.interval, web.analysis.bake_time) == (60.0, 30.0, 5400.0)
    assert list(web.signals) == ["error_rate", "p95_latency", "log_errors", "health", "api", "ws"]
    assert web.signals["error_rate"].provider == PrometheusSignal(
        'sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{podPrefix}}.*",code=~"5.."}[1m]))'
    )
    latency = web.signals["p95_latency"].provider
    assert isinstance(latency, PrometheusSignal)
    assert latency.baseline is BaselineMode.PREVIOUS
    assert web.signals["p95_latency"].has_baseline
    assert web.signals["log_errors"].provider == LogsSignal(r"(?i)\b(error|traceback)\b", "web")
    assert web.signals["health"].provider == HttpSignal(
        "http://{{deployment}}.{{namespace}}:8000/health?rev={{revision}}", "HEAD", 204, 0.5
    )
    assert web.signals["api"].provider == HttpSignal(
        "https://web.{{namespace}}.svc/api/items/{{podTemplateHash}}",
        expect_body='"items":',
        expect_json=JsonExpectation("$.items[0].state", "ready"),
    )
    assert web.signals["ws"].provider == WebSocketSignal(
        "wss://web.{{namespace}}:8443/ws", '{"type":"PING"}', "PONG", 3.0
    )
    errors, down, slow, noisy = web.rules
    assert errors.when.text == "error_rate > 0.05\n  && error_rate.ok\n"
    assert (errors.for_, errors.action, errors.on_inconclusive, errors.on_error) == (
        60.0,
        Action.ROLLBACK,
        Unavailable.REVIEW,
        Unavailable.NOTIFY,
    )
    assert (down.for_, down.on_inconclusive, down.on_error) == (30.0, Unavailable.HOLD, Unavailable.IGNORE)
    assert down.when.signals == {"health", "api", "ws"}
    assert (slow.action, slow.on_inconclusive, slow.when.baselines) == (
        Action.REVIEW,
        Unavailable.PASS,
        {"p95_latency"},
    )
    assert (noisy.for_, noisy.action) == (0.0, Action.NOTIFY)
    assert errors.source.line == 38
    assert web.on_failure is Action.REVIEW
    assert web.on_rollback_job == RollbackJob(("alembic", "downgrade", "-1"), 600.0, True)
    assert web.notify.slack == SlackTarget("#deploys")
    assert web.notify.pagerduty == PagerDutyTarget(SecretKeyRef("rollguard", "pagerduty-routing-key"))


def test_defaults() -> None:
    (minimal,) = load_file("good/minimal.yml").policies
    assert (minimal.analysis.initial_delay, minimal.analysis.interval, minimal.analysis.bake_time) == (
        30.0,
        15.0,
        600.0,
    )
    assert minimal.selector.namespaces == ()
    assert minimal.on_failure is Action.NOTIFY
    assert minimal.on_rollback_job is None
    assert (minimal.notify.slack, minimal.notify.pagerduty) == (None, None)
    (rule,) = minimal.rules
    assert (rule.for_, rule.on_inconclusive, rule.on_error) == (0.0, Unavailable.HOLD, Unavailable.HOLD)
    health = minimal.signals["health"].provider
    assert health == HttpSignal("http://api.{{namespace}}/health", "GET", 200, 2.0, None, None)


def test_missing_paths_and_empty_directories_are_errors(tmp_path: Path) -> None:
    result = load_rules(["nowhere.yaml", str(tmp_path)])
    assert [str(e) for e in result.errors] == [
        "nowhere.yaml: no such file or directory",
        f"{tmp_path}: no *.yaml or *.yml files in this directory",
    ]


def test_empty_documents_are_skipped(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n---\n")
    result = load_rules([str(empty)])
    assert result.ok
    assert (result.policies, result.files) == ((), (str(empty),))


def test_shipped_examples_load_without_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = load_rules(["rules"])
    assert [str(e) for e in result.errors] == []
    (policy,) = result.policies
    assert policy.name == "backend-staging"
    assert policy.selector.matches("staging", {"app": "backend"})
    assert [(r.name, r.action) for r in policy.rules] == [
        ("error-rate-over-5pct", Action.ROLLBACK),
        ("key-feature-down", Action.ROLLBACK),
        ("latency-worse-than-50pct", Action.REVIEW),
        ("minor-errors", Action.NOTIFY),
    ]
    assert policy.on_failure is Action.ROLLBACK


def test_check_reports_ok_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert check_paths(["rules"]) == (0, ["rules/backend-staging.yaml: 1 policy, 4 rules OK"])
    monkeypatch.chdir(DATA)
    assert check_paths(["good"]) == (
        0,
        ["good/full.yaml: 2 policies, 5 rules OK", "good/minimal.yml: 1 policy, 1 rule OK"],
    )


def test_check_reports_every_error_and_fails() -> None:
    code, lines = check_paths(["bad/many-errors.yaml", "bad/wrong-kind.yaml"])
    assert code == 1
    assert lines == EXPECTED_ERRORS["many-errors.yaml"] + EXPECTED_ERRORS["wrong-kind.yaml"]
