"""Credentials for talking to Prometheus: the bearer token file and the CA file, read once at start.

`read_bearer_token` reads the file ROLLGUARD_PROMETHEUS_TOKEN_FILE names (the chart mounts it from a
Secret); `ca_ssl_context` builds a client SSLContext that trusts only the CA in the file
ROLLGUARD_PROMETHEUS_CA_FILE names. Both raise `PrometheusConfigError` (a `SettingsError`, so
`rollguard run` refuses to start with the message) naming the variable and the file, never the token.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from daemon.redaction import REDACTED
from daemon.settings import SettingsError

TOKEN_FILE_ENV = "ROLLGUARD_PROMETHEUS_TOKEN_FILE"
"""Environment variable naming the file (a mounted Secret) that holds Prometheus' bearer token."""
CA_FILE_ENV = "ROLLGUARD_PROMETHEUS_CA_FILE"
"""Environment variable naming the PEM file of the CA that signed Prometheus' TLS certificate."""


class PrometheusConfigError(SettingsError):
    """The token or CA file cannot be used; the message names the variable and the file, never the token.

    A SettingsError, so `rollguard run` refuses to start with it (exit 2) rather than with a traceback."""


def read_bearer_token(path: Path) -> str:
    """The bearer token in the file at `path` (surrounding whitespace dropped); PrometheusConfigError if
    the file cannot be read, is not UTF-8 text, is empty or holds more than one line."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PrometheusConfigError(f"{TOKEN_FILE_ENV}: cannot read {path}: {reason}") from None
    if not token:
        raise PrometheusConfigError(f"{TOKEN_FILE_ENV}: {path} is empty")
    # A header value cannot hold a line break; aiohttp would refuse every query with a less clear error.
    if any(c in token for c in "\r\n"):
        raise PrometheusConfigError(f"{TOKEN_FILE_ENV}: {path} holds more than one line; the token is one line")
    return token


def ca_ssl_context(path: Path) -> ssl.SSLContext:
    """A client SSLContext that trusts only the PEM CA certificate(s) in `path` (host names still checked);
    PrometheusConfigError if the file cannot be read or holds no certificate."""
    try:
        return ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise PrometheusConfigError(f"{CA_FILE_ENV}: cannot read {path}: No such file or directory") from None
    except ssl.SSLError:  # before OSError, which it subclasses
        raise PrometheusConfigError(f"{CA_FILE_ENV}: {path} holds no PEM CA certificate") from None
    except OSError as exc:
        raise PrometheusConfigError(f"{CA_FILE_ENV}: cannot read {path}: {exc.strerror}") from None


class SecretRedactor:
    """Replaces one secret value in a text; equal for equal values, so registering it twice is a no-op."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __call__(self, text: str) -> str:
        return text.replace(self._secret, REDACTED)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRedactor) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self._secret)

    def __repr__(self) -> str:
        return "SecretRedactor(…)"
