"""Logging: structlog, JSON lines in a cluster, a readable console on a TTY.

Context (namespace, deployment, revision) is bound with `structlog.contextvars.bind_contextvars`
or `log.bind(...)` by the code that knows it; this module only configures the pipeline.

Every record is scrubbed, whoever configures logging (the CLI included): tracebacks are rendered to
text first and then scrubbed with the process-wide `daemon.redaction.SCRUBBER` (URL user-info and
secret query values, plus every secret registered with it) and with the notifiers' shape
recognition (Slack tokens and webhook paths, PagerDuty-key-shaped strings). Records of the stdlib
loggers that libraries write to (aiohttp, asyncio) get the same treatment through a handler filter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from daemon.notify.secrets import Redactor
from daemon.redaction import SCRUBBER
from daemon.settings import LogSettings

# Secret shapes (Slack tokens, webhook paths, 32-character keys) known without any configuration.
_SHAPES = Redactor()


def scrub(text: str) -> str:
    """`text` as it may be logged: registered secrets, URL secrets and secret-shaped strings removed."""
    return _SHAPES.redact(SCRUBBER.scrub(text))


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def scrub_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: renders `exc_info` to text (as `format_exc_info` does), then scrubs every value."""
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub_value(value)
    return event_dict


class ScrubbingFilter(logging.Filter):
    """A stdlib handler filter: formats the record's message and traceback now, scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None,
                      redact: structlog.types.Processor | None = None) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process.

    Every record is scrubbed (see the module docstring) just before rendering. `redact` (the
    notifiers' `Redactor.structlog_processor`) runs as well when given; registering the notifiers'
    redactor with `daemon.redaction.SCRUBBER.add(redactor.redact)` has the same effect and also
    covers Events.
    """
    out = stream if stream is not None else sys.stderr
    level = getattr(logging, settings.level.upper())
    use_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            scrub_processor,
            *([redact] if redact is not None else []),
            # The level and the time are added after scrubbing: they are the daemon's own words, and
            # scrubbing costs per value (an evaluation line is logged for every tick of every analysis).
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())
