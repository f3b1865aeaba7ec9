"""The factory: notifiers from configuration, secrets from env/files/mounted Secrets, and refusals."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from daemon.notify import NotifyConfigError, SecretSourceError, build_notifiers
from daemon.notify.console import ConsoleNotifier
from daemon.notify.nop import NopNotifier
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.slack import SlackNotifier, SlackWebhookNotifier
from tests.test_notify_kit import ROUTING_KEY, SLACK_TOKEN


async def test_nothing_configured_is_the_nop_notifier() -> None:
    for config in (None, {}):
        built = build_notifiers(config, env={})
        assert [type(n) for n in built.notifiers] == [NopNotifier]


async def test_builds_each_notifier_and_registers_its_secrets(tmp_path: Path) -> None:
    key_file = tmp_path / "routing-key"
    key_file.write_text(ROUTING_KEY + "\n")
    stream = io.StringIO()
    built = build_notifiers(
        {"slack": {"channel": "#deploys"}, "pagerduty": {"routingKeyFrom": {"file": str(key_file)}}, "console": {}},
        env={"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN},
        console_stream=stream,
    )
    try:
        assert [type(n) for n in built.notifiers] == [SlackNotifier, PagerDutyNotifier, ConsoleNotifier]
        scrubbed = built.redactor.redact(f"token {SLACK_TOKEN} key {ROUTING_KEY}")
        assert scrubbed == "token [REDACTED] key [REDACTED]"
    finally:
        for notifier in built.notifiers:
            await notifier.aclose()


async def test_secret_reference_reads_the_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "rollguard").mkdir()
    (tmp_path / "rollguard" / "pagerduty-routing-key").write_text(ROUTING_KEY)
    built = build_notifiers(
        {"pagerduty": {"routingKeyFrom": {"secret": "rollguard", "key": "pagerduty-routing-key"}}},
        env={}, secrets_dir=tmp_path,
    )
    assert isinstance(built.notifiers[0], PagerDutyNotifier)
    await built.notifiers[0].aclose()


async def test_file_variants_of_the_variables(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.write_text("https://hooks.slack.com/services/T1/B2/abcdef")
    built = build_notifiers({"slack": {}}, env={"ROLLGUARD_SLACK_WEBHOOK_URL_FILE": str(hook)})
    assert isinstance(built.notifiers[0], SlackWebhookNotifier)
    assert built.redactor.redact("posting to https://hooks.slack.com/services/T1/B2/abcdef failed") == (
        "posting to [REDACTED] failed")


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ({"teams": {}}, {}, "notify: unknown notifier 'teams' (known: slack, pagerduty, console, nop)"),
        ({"slack": {"channel": "#d", "tokne": {}}}, {"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN},
         "notify.slack: unknown key 'tokne' (allowed: channel, tokenFrom, webhookUrlFrom, baseUrl, timeout)"),
        ({"slack": {"channel": "#d"}}, {},
         "notify.slack: no credentials: set tokenFrom (or ROLLGUARD_SLACK_TOKEN / ROLLGUARD_SLACK_TOKEN_FILE) "
         "or webhookUrlFrom (or ROLLGUARD_SLACK_WEBHOOK_URL / ROLLGUARD_SLACK_WEBHOOK_URL_FILE)"),
        ({"slack": {}}, {"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN},
         'notify.slack.channel: required with a bot token (for example "#deploys")'),
        ({"slack": {"tokenFrom": {"env": "A"}, "webhookUrlFrom": {"env": "B"}}}, {},
         "notify.slack: set tokenFrom or webhookUrlFrom, not both"),
        ({"slack": {"channel": "#d", "tokenFrom": {"env": "MISSING"}}}, {},
         "notify.slack.tokenFrom: environment variable MISSING is not set"),
        ({"slack": {"channel": "#d", "tokenFrom": {"env": "A", "file": "/x"}}}, {},
         "notify.slack.tokenFrom: must be exactly one of {env: VAR}, {file: PATH} or {secret: NAME, key: KEY}; "
         "got keys env, file"),
        ({"pagerduty": {}}, {}, "notify.pagerduty: no routing key: set routingKeyFrom, or "
         "ROLLGUARD_PAGERDUTY_ROUTING_KEY / ROLLGUARD_PAGERDUTY_ROUTING_KEY_FILE"),
        ({"pagerduty": {"baseUrl": "http://insecure"}}, {"ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY},
         "notify.pagerduty.baseUrl: must be an https:// URL (the PagerDuty client refuses others)"),
        ({"pagerduty": {"timeout": "10s"}}, {"ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY},
         "notify.pagerduty.timeout: must be a number of seconds in (0, 300], not '10s'"),
        ({"pagerduty": {"routingKeyFrom": {"secret": "rollguard", "key": "pd"}}}, {},
         "notify.pagerduty.routingKeyFrom: Secret rollguard/pd is not mounted at /nonexistent/rollguard/pd "
         "(mount the Secret there, or use {env: VAR} / {file: PATH})"),
        ({"console": {"stream": "printer"}}, {}, "notify.console.stream: must be stdout or stderr, not 'printer'"),
        (["slack"], {}, "notify: must be a mapping of notifier name to settings, not a list"),
    ],
)
def test_refusals_name_the_field(config: Any, env: dict[str, str], message: str) -> None:
    with pytest.raises(NotifyConfigError) as error:
        build_notifiers(config, env=env, secrets_dir=Path("/nonexistent"))
    assert str(error.value) == message


def test_an_empty_secret_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(SecretSourceError, match=f"secret file {empty} is empty"):
        build_notifiers({"slack": {"channel": "#d"}}, env={"ROLLGUARD_SLACK_TOKEN_FILE": str(empty)})


def test_where_prefixes_errors() -> None:
    with pytest.raises(NotifyConfigError, match=r"^rules/backend.yaml: spec.notify: unknown notifier 'email'"):
        build_notifiers({"email": {}}, where="rules/backend.yaml: spec.notify")
