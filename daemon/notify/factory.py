"""Build notifiers from configuration; refuse anything unknown at load time.

Configuration (a rule file's `spec.notify`, or the daemon's own config), every key optional:

    notify:
      slack:
        channel: "#deploys"                 # required with a bot token
        tokenFrom: {env: MY_TOKEN_VAR}      # or {file: /path}, or {secret: NAME, key: KEY}
        webhookUrlFrom: {file: /path}       # webhook mode instead of a token (no threads)
        baseUrl: https://slack.com/api/     # tests and proxies
        timeout: 10                         # seconds per HTTP call
      pagerduty:
        routingKeyFrom: {secret: rollguard, key: pagerduty-routing-key}
        baseUrl: https://events.pagerduty.com
        caFile: /etc/ssl/private-ca.pem     # trust this CA for the Events API (this client only)
        timeout: 10
      console: {}                           # or {stream: stdout | stderr}

Secrets never appear in the configuration itself. Without `tokenFrom`/`webhookUrlFrom`/
`routingKeyFrom`, the documented variables are read (see `daemon.notify.secrets`):
ROLLGUARD_SLACK_TOKEN, ROLLGUARD_SLACK_WEBHOOK_URL, ROLLGUARD_PAGERDUTY_ROUTING_KEY, or each with
`_FILE` naming a file. `{secret: NAME, key: KEY}` reads `<secrets_dir>/NAME/KEY`, which is where the
Helm chart mounts the Kubernetes Secret (default /var/run/secrets/rollguard).

Unknown notifier names, unknown keys and unusable values raise `NotifyConfigError` naming the
field; nothing falls back silently. An empty or missing configuration gives the `NopNotifier`.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from daemon.notify.console import ConsoleNotifier
from daemon.notify.model import Notifier, NotifyConfigError, SecretSourceError, ThreadStore
from daemon.notify.nop import NopNotifier
from daemon.notify.pagerduty import DEFAULT_BASE_URL as PAGERDUTY_BASE_URL, PagerDutyNotifier
from daemon.notify.secrets import (
    PAGERDUTY_ROUTING_KEY_ENV,
    SLACK_TOKEN_ENV,
    SLACK_WEBHOOK_URL_ENV,
    Redactor,
    read_default_secret,
    read_secret,
)
from daemon.notify.slack import DEFAULT_BASE_URL as SLACK_BASE_URL, SlackNotifier, SlackWebhookNotifier

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/rollguard")
ROUTING_KEY_LENGTH = 32


@dataclass
class Connections:
    """How the daemon-wide notifiers reach Slack and PagerDuty; policies' own targets connect the same way."""

    slack_token: str | None = field(default=None, repr=False)
    """The bot token (a secret), when Slack is configured in bot-token mode: a policy's channel needs it."""
    slack_base_url: str = SLACK_BASE_URL
    slack_timeout: float = 10.0
    """Seconds per Slack HTTP call."""
    pagerduty_base_url: str = PAGERDUTY_BASE_URL
    pagerduty_timeout: float = 10.0
    """Seconds per PagerDuty HTTP call."""
    pagerduty_ssl: ssl.SSLContext | None = None
    """Trust for the PagerDuty client (None: the system's CAs)."""


@dataclass(frozen=True)
class NotifierSet:
    """What the factory built: the notifiers, and the redactor that knows all their secrets.

    Hand `redactor` to the pipeline and put `redactor.structlog_processor` in the log configuration.
    """

    notifiers: tuple[Notifier, ...]
    redactor: Redactor
    connections: Connections = field(default_factory=Connections)
    """What a policy's own Slack channel or PagerDuty key is reached with (see `daemon.notify.routing`)."""


@dataclass(frozen=True)
class _Context:
    where: str
    env: Mapping[str, str]
    secrets_dir: Path
    redactor: Redactor
    console_stream: TextIO | None
    pagerduty_ssl: ssl.SSLContext | None
    connections: Connections
    check_only: bool = False
    thread_store: ThreadStore | None = None


def build_notifiers(
    config: Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path = DEFAULT_SECRETS_DIR,
    redactor: Redactor | None = None,
    where: str = "notify",
    console_stream: TextIO | None = None,
    pagerduty_ssl: ssl.SSLContext | None = None,
    check_only: bool = False,
    thread_store: ThreadStore | None = None,
) -> NotifierSet:
    """Notifiers for `config` (see the module docstring); `where` prefixes error messages
    (e.g. "rules/backend.yaml: spec.notify"); `pagerduty_ssl` overrides `caFile` (the demo's receiver);
    `check_only`: validate every key and the shape of every `*From` reference without reading any
    secret or CA file (`rollguard check --notify-config`, where the secrets are absent); `thread_store`:
    where the Slack bot notifier records each rollout's thread (give the router the same one)."""
    ctx = _Context(
        where=where,
        env=os.environ if env is None else env,
        secrets_dir=secrets_dir,
        redactor=redactor if redactor is not None else Redactor(),
        console_stream=console_stream,
        pagerduty_ssl=pagerduty_ssl,
        connections=Connections(pagerduty_ssl=pagerduty_ssl),
        check_only=check_only,
        thread_store=thread_store,
    )
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise NotifyConfigError(f"{where}: must be a mapping of notifier name to settings, not {_kind(config)}")
    unknown = sorted(set(config) - set(_BUILDERS))
    if unknown:
        raise NotifyConfigError(
            f"{where}: unknown notifier {', '.join(map(repr, unknown))} (known: {', '.join(_BUILDERS)})"
        )
    notifiers: list[Notifier] = []
    for name, settings in config.items():
        if settings is None:
            settings = {}
        if not isinstance(settings, Mapping):
            raise NotifyConfigError(f"{where}.{name}: must be a mapping of settings, not {_kind(settings)}")
        notifiers.append(_BUILDERS[name](settings, ctx))
    if not notifiers:
        notifiers.append(NopNotifier())
    return NotifierSet(notifiers=tuple(notifiers), redactor=ctx.redactor, connections=ctx.connections)


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "nothing" if value is None else f"a {type(value).__name__}"


def _check_keys(settings: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise NotifyConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})")


def _string(settings: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = settings.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise NotifyConfigError(f"{where}.{key}: must be a non-empty string")
    return value


def _seconds(settings: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 300:
        raise NotifyConfigError(f"{where}.{key}: must be a number of seconds in (0, 300], not {value!r}")
    return float(value)


def _http_url(value: str, where: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotifyConfigError(f"{where}: must be an http(s) URL")
    return value


def _secret(
    settings: Mapping[str, Any], key: str, ctx: _Context, where: str, *, default_env: str | None
) -> str | None:
    """Resolve a `*From` reference (or the default variables); None when neither is configured."""
    what = f"{where}.{key}"
    ref = settings.get(key)
    if ref is None and ctx.check_only:
        # Where the variables will be at run time is unknown here; assume they are set for the mode
        # the other keys describe (a channel means a bot token).
        wanted = key != "tokenFrom" or "channel" in settings
        return _CHECK_PLACEHOLDERS[key] if wanted and default_env is not None else None
    if ref is None:
        return None if default_env is None else read_default_secret(default_env, env=ctx.env, what=what)
    if not isinstance(ref, Mapping):
        raise NotifyConfigError(f"{what}: must be {{env: VAR}}, {{file: PATH}} or {{secret: NAME, key: KEY}}")
    shape = frozenset(ref)
    if ctx.check_only and _well_formed(ref):
        return _CHECK_PLACEHOLDERS[key]
    if shape == {"env"} and isinstance(ref["env"], str):
        value = read_secret(env_name=ref["env"], env=ctx.env, what=what)
    elif shape == {"file"} and isinstance(ref["file"], str):
        value = read_secret(file_path=ref["file"], env=ctx.env, what=what)
    elif shape == {"secret", "key"} and all(isinstance(ref[k], str) and ref[k] for k in shape):
        path = ctx.secrets_dir / ref["secret"] / ref["key"]
        if not path.exists():
            raise SecretSourceError(
                f"{what}: Secret {ref['secret']}/{ref['key']} is not mounted at {path} "
                f"(mount the Secret there, or use {{env: VAR}} / {{file: PATH}})"
            )
        value = read_secret(file_path=path, env=ctx.env, what=what)
    else:
        raise NotifyConfigError(
            f"{what}: must be exactly one of {{env: VAR}}, {{file: PATH}} or {{secret: NAME, key: KEY}}; "
            f"got keys {', '.join(sorted(map(str, ref)))}"
        )
    ctx.redactor.add(value)
    return value


def _well_formed(ref: Mapping[str, Any]) -> bool:
    """Whether `ref` is one of {env: VAR}, {file: PATH}, {secret: NAME, key: KEY} with string values."""
    shapes = ({"env"}, {"file"}, {"secret", "key"})
    return set(ref) in shapes and all(isinstance(v, str) and v for v in ref.values())


# Values of the right shape for `check_only`: they pass the checks a real secret must pass.
_CHECK_PLACEHOLDERS: Mapping[str, str] = {
    "tokenFrom": "xoxb-check-only",
    "webhookUrlFrom": "https://hooks.slack.com/services/check-only",
    "routingKeyFrom": "0" * ROUTING_KEY_LENGTH,
}

_SLACK_KEYS = ("channel", "tokenFrom", "webhookUrlFrom", "baseUrl", "timeout")


def _build_slack(settings: Mapping[str, Any], ctx: _Context) -> Notifier:
    where = f"{ctx.where}.slack"
    _check_keys(settings, _SLACK_KEYS, where)
    timeout = _seconds(settings, "timeout", where, 10.0)
    explicit_token, explicit_hook = "tokenFrom" in settings, "webhookUrlFrom" in settings
    if explicit_token and explicit_hook:
        raise NotifyConfigError(f"{where}: set tokenFrom or webhookUrlFrom, not both")
    token = None if explicit_hook else _secret(settings, "tokenFrom", ctx, where, default_env=SLACK_TOKEN_ENV)
    if token is not None:
        if not token.startswith(("xoxb-", "xoxp-")):
            raise NotifyConfigError(f"{where}.tokenFrom: the value does not look like a Slack bot token (xoxb-…)")
        channel = _string(settings, "channel", where)
        if channel is None:
            raise NotifyConfigError(f"{where}.channel: required with a bot token (for example \"#deploys\")")
        base_url = _http_url(_string(settings, "baseUrl", where, SLACK_BASE_URL) or SLACK_BASE_URL,
                              f"{where}.baseUrl")
        ctx.connections.slack_token, ctx.connections.slack_base_url = token, base_url
        ctx.connections.slack_timeout = timeout
        return SlackNotifier(token=token, channel=channel, redactor=ctx.redactor, base_url=base_url, timeout=timeout,
                             thread_store=ctx.thread_store)
    url = _secret(settings, "webhookUrlFrom", ctx, where, default_env=SLACK_WEBHOOK_URL_ENV)
    if url is None:
        raise NotifyConfigError(
            f"{where}: no credentials: set tokenFrom (or {SLACK_TOKEN_ENV} / {SLACK_TOKEN_ENV}_FILE) "
            f"or webhookUrlFrom (or {SLACK_WEBHOOK_URL_ENV} / {SLACK_WEBHOOK_URL_ENV}_FILE)"
        )
    if "baseUrl" in settings or "channel" in settings:
        raise NotifyConfigError(f"{where}: channel and baseUrl do not apply to a webhook (its URL fixes both)")
    _http_url(url, f"{where}.webhookUrlFrom")
    return SlackWebhookNotifier(url=url, redactor=ctx.redactor, timeout=timeout)


_PAGERDUTY_KEYS = ("routingKeyFrom", "baseUrl", "caFile", "timeout")


def _build_pagerduty(settings: Mapping[str, Any], ctx: _Context) -> Notifier:
    where = f"{ctx.where}.pagerduty"
    _check_keys(settings, _PAGERDUTY_KEYS, where)
    key = _secret(settings, "routingKeyFrom", ctx, where, default_env=PAGERDUTY_ROUTING_KEY_ENV)
    if key is None:
        raise NotifyConfigError(
            f"{where}: no routing key: set routingKeyFrom, or {PAGERDUTY_ROUTING_KEY_ENV} "
            f"/ {PAGERDUTY_ROUTING_KEY_ENV}_FILE"
        )
    if len(key) != ROUTING_KEY_LENGTH:
        # The length only: the value itself is a secret.
        raise NotifyConfigError(
            f"{where}.routingKeyFrom: a routing key has {ROUTING_KEY_LENGTH} characters, this one has {len(key)}"
        )
    base_url = _string(settings, "baseUrl", where, PAGERDUTY_BASE_URL) or PAGERDUTY_BASE_URL
    if not base_url.startswith("https://"):
        raise NotifyConfigError(f"{where}.baseUrl: must be an https:// URL (the PagerDuty client refuses others)")
    ssl_context = ctx.pagerduty_ssl
    ca_file = _string(settings, "caFile", where)
    if ssl_context is None and ca_file is not None and not ctx.check_only:
        try:
            ssl_context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise NotifyConfigError(f"{where}.caFile: cannot load {ca_file}: {exc}") from None
    timeout = _seconds(settings, "timeout", where, 10.0)
    ctx.connections.pagerduty_base_url, ctx.connections.pagerduty_timeout = base_url, timeout
    ctx.connections.pagerduty_ssl = ssl_context
    return PagerDutyNotifier(routing_key=key, redactor=ctx.redactor, base_url=base_url, timeout=timeout,
                             ssl_context=ssl_context)


def _build_console(settings: Mapping[str, Any], ctx: _Context) -> Notifier:
    where = f"{ctx.where}.console"
    _check_keys(settings, ("stream",), where)
    stream_name = settings.get("stream")
    streams = {"stdout": sys.stdout, "stderr": sys.stderr}
    if stream_name is not None and stream_name not in streams:
        raise NotifyConfigError(f"{where}.stream: must be stdout or stderr, not {stream_name!r}")
    stream = ctx.console_stream if stream_name is None else streams[stream_name]
    return ConsoleNotifier(stream=stream, redactor=ctx.redactor)


def _build_nop(settings: Mapping[str, Any], ctx: _Context) -> Notifier:
    _check_keys(settings, (), f"{ctx.where}.nop")
    return NopNotifier()


_BUILDERS: Mapping[str, Callable[[Mapping[str, Any], _Context], Notifier]] = {
    "slack": _build_slack,
    "pagerduty": _build_pagerduty,
    "console": _build_console,
    "nop": _build_nop,
}
