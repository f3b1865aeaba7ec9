"""Secrets: reading them (environment variable or mounted file) and scrubbing them from text.

A `Redactor` knows the configured secret values and also recognises secrets by shape (Slack tokens,
Slack webhook paths, 32-character PagerDuty routing keys), so a token that was never configured
(say, pasted into a rule file) is still scrubbed. Every error message, log line and exception text
that leaves a notifier goes through one. `Redactor.structlog_processor` plugs it into structlog and
`Redactor.logging_filter()` into the stdlib loggers that pagerduty and httpx2 write to.

Variables (each also as `<NAME>_FILE`, a path whose content is the secret, as a mounted Kubernetes
Secret provides it):
    ROLLGUARD_SLACK_TOKEN            Slack bot token (xoxb-…), bot-token mode with threads
    ROLLGUARD_SLACK_WEBHOOK_URL      Slack incoming-webhook URL, webhook mode (no threads)
    ROLLGUARD_PAGERDUTY_ROUTING_KEY  PagerDuty Events API v2 routing (integration) key, 32 characters
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from daemon.notify.model import SecretSourceError
from daemon.redaction import SCRUBBER

SLACK_TOKEN_ENV = "ROLLGUARD_SLACK_TOKEN"
SLACK_WEBHOOK_URL_ENV = "ROLLGUARD_SLACK_WEBHOOK_URL"
PAGERDUTY_ROUTING_KEY_ENV = "ROLLGUARD_PAGERDUTY_ROUTING_KEY"

REDACTED = "[REDACTED]"

# Secrets recognised by shape. Slack tokens: xoxb (bot), xoxp (user), xoxa/xoxr (app/refresh),
# xoxe (rotating). Webhook URLs carry their secret in the path. A run of exactly 32 letters and
# digits is what a PagerDuty routing key looks like; scrubbing the odd MD5 in an error is harmless.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"xox[abpre]-[A-Za-z0-9-]+"), REDACTED),
    (re.compile(r"(https?://hooks\.slack\.com/)[^\s\"'<>]+"), r"\g<1>" + REDACTED),
    (re.compile(r"(/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"), r"\g<1>" + REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])"), REDACTED),
)

# Shorter "secrets" would shred ordinary words in messages; no real token is this short.
_MIN_SECRET_LENGTH = 6


class Redactor:
    """Scrubs known secret values and secret-shaped strings from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Remember one secret value (and its URL-encoded form, which is how it shows up in URLs)."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET_LENGTH:
            return
        self._secrets.add(secret)
        self._secrets.add(urllib.parse.quote(secret, safe=""))
        self._secrets.add(urllib.parse.quote_plus(secret))
        # Whatever was scrubbed (and memoised) before this secret was known must be scrubbed again.
        SCRUBBER.changed()

    def redact(self, text: str) -> str:
        """`text` with every known secret and secret-shaped string replaced by [REDACTED]."""
        # Longest first, so a secret containing another secret is removed whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text

    __call__ = redact

    def describe(self, exc: BaseException) -> str:
        """`ExceptionType: message` of an exception, redacted; what notifiers put in SendResult.error."""
        message = str(exc)
        return self.redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)

    def redact_value(self, value: Any) -> Any:
        """Redact strings inside nested dicts, lists and tuples; other values are returned as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_value(v) for v in value)
        if isinstance(value, BaseException):
            return self.describe(value)
        return value

    def structlog_processor(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor; put it just before the renderer.

        An `exc_info` is rendered to the `exception` string here (as `format_exc_info` would) so the
        traceback text, which often quotes URLs and request bodies, is scrubbed as well.
        """
        if event_dict.get("exc_info"):
            event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
        for key, value in list(event_dict.items()):
            event_dict[key] = self.redact_value(value)
        return event_dict

    def logging_filter(self) -> logging.Filter:
        """A stdlib logging filter that redacts each record's formatted message in place."""
        return _RedactingFilter(self)


def redacting_logger(name: str, redactor: Redactor, *, level: int = logging.INFO) -> logging.Logger:
    """A stdlib logger to hand to a client library (pagerduty) that scrubs every record.

    It is not registered with `logging.getLogger` (so it is garbage-collected with its notifier and
    filters never pile up on a shared logger) but propagates to the `rollguard.notify` logger, so
    records still reach the handlers the process configured. The level defaults to INFO because
    client libraries build DEBUG messages containing request bodies and URLs whenever the level allows.
    """
    logger = logging.Logger(name, level)
    logger.parent = logging.getLogger("rollguard.notify")
    logger.addFilter(redactor.logging_filter())
    return logger


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is rendered later by the handler; render it now, scrubbed.
            record.exc_text = self._redactor.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def read_secret(
    *,
    env_name: str | None = None,
    file_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
) -> str:
    """Read one secret from an environment variable or a file; errors name the source, never the value.

    Exactly one of `env_name` and `file_path` must be given. A file's trailing newline is dropped
    (`kubectl create secret --from-file` keeps the newline an editor adds).
    """
    environ = os.environ if env is None else env
    if (env_name is None) == (file_path is None):
        raise SecretSourceError(f"{what}: give exactly one of an environment variable or a file")
    if env_name is not None:
        value = environ.get(env_name)
        if value is None:
            raise SecretSourceError(f"{what}: environment variable {env_name} is not set")
        if not value.strip():
            raise SecretSourceError(f"{what}: environment variable {env_name} is empty")
        return value.strip()
    path = Path(str(file_path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretSourceError(f"{what}: secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretSourceError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretSourceError(f"{what}: secret file {path} is not UTF-8 text") from None
    if not text.strip():
        raise SecretSourceError(f"{what}: secret file {path} is empty")
    return text.strip()


def read_default_secret(name: str, *, env: Mapping[str, str] | None = None, what: str) -> str | None:
    """`$NAME`, else the file named by `$NAME_FILE`, else None (not configured)."""
    environ = os.environ if env is None else env
    if environ.get(name):
        return read_secret(env_name=name, env=environ, what=what)
    if environ.get(name + "_FILE"):
        return read_secret(file_path=environ[name + "_FILE"], env=environ, what=what)
    return None
