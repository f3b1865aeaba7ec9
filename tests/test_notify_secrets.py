"""The redactor: known secrets and secret-shaped strings scrubbed from text, structlog and stdlib logs."""

from __future__ import annotations

import logging

import pytest
import structlog

from daemon.notify.secrets import Redactor, redacting_logger


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auth xoxb-123-456-abcDEF failed", "auth [REDACTED] failed"),
        ("user token xoxp-1-2-3 and xoxe-1-abc", "user token [REDACTED] and [REDACTED]"),
        ("POST https://hooks.slack.com/services/T0/B0/xyz → 404", "POST https://hooks.slack.com/[REDACTED] → 404"),
        ("path /services/T0ABC/B0DEF/s3cr3t not found", "path /services/[REDACTED] not found"),
        ("routing_key=0123456789abcdef0123456789ABCDEF;", "routing_key=[REDACTED];"),
        ("33 chars: 0123456789abcdef0123456789ABCDEFx stays", "33 chars: 0123456789abcdef0123456789ABCDEFx stays"),
        ("nothing secret here: staging/backend rev 7", "nothing secret here: staging/backend rev 7"),
    ],
)
def test_secret_shapes_are_scrubbed(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


def test_configured_secrets_and_their_url_encoded_forms_are_scrubbed() -> None:
    redactor = Redactor(["p@ss word/123"])
    assert redactor.redact("got p@ss word/123 and p%40ss%20word%2F123 and p%40ss+word%2F123") == (
        "got [REDACTED] and [REDACTED] and [REDACTED]")
    redactor.add("abc")  # too short to be a credential: ignored rather than shredding ordinary words
    assert redactor.redact("abcdef") == "abcdef"


def test_exceptions_are_described_redacted() -> None:
    redactor = Redactor(["hunter2-secret"])
    assert redactor.describe(ValueError("bad key hunter2-secret")) == "ValueError: bad key [REDACTED]"


def test_structlog_processor_scrubs_values_and_tracebacks() -> None:
    redactor = Redactor(["hunter2-secret"])
    try:
        raise RuntimeError("connect failed with hunter2-secret")
    except RuntimeError as exc:
        event = redactor.structlog_processor(None, "error", {
            "event": "failed hunter2-secret", "nested": {"list": ["hunter2-secret", 1]}, "exc_info": exc,
        })
    assert event["event"] == "failed [REDACTED]"
    assert event["nested"] == {"list": ["[REDACTED]", 1]}
    assert "hunter2-secret" not in event["exception"]
    assert "RuntimeError: connect failed with [REDACTED]" in event["exception"]


def test_structlog_processor_in_a_configured_chain() -> None:
    redactor = Redactor(["hunter2-secret"])
    output: list[str] = []
    logger = structlog.wrap_logger(
        structlog.PrintLogger(_Sink(output)),
        processors=[redactor.structlog_processor, structlog.processors.JSONRenderer()],
    )
    logger.warning("token hunter2-secret rejected", token="hunter2-secret")
    assert "".join(output) == '{"token": "[REDACTED]", "event": "token [REDACTED] rejected"}\n'


class _Sink:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def test_redacting_logger_scrubs_stdlib_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logger = redacting_logger("rollguard.notify.test", Redactor(["hunter2-secret"]))
    try:
        raise OSError("socket said hunter2-secret")
    except OSError:
        logger.warning("request to %s failed", "https://x/?k=hunter2-secret", exc_info=True)
    assert "hunter2-secret" not in caplog.text
    assert "request to https://x/?k=[REDACTED] failed" in caplog.text
    assert "OSError: socket said [REDACTED]" in caplog.text
