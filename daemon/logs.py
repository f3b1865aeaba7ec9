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
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from daemon.notify.secrets import Redactor
from daemon.redaction import SCRUBBER
from daemon.settings import LogSettings

# Secret shapes (Slack tokens, webhook paths, 32-character keys) known without any configuration.
_SHAPES = Redactor()


# Scrubbed texts, memoised: an evaluation line is logged for every tick of every analysis, and most of
# its strings (rule names, verdicts, a provider's "no data") recur. Valid for one `SCRUBBER.generation`:
# a secret learnt since (a notifier's key, a bearer token) voids every result. Bounded in entries and
# in the length of what is kept.
_MEMO: dict[str, str] = {}
_MEMO_ENTRIES = 2048
_MEMO_TEXT_CHARS = 400
_memo_generation = -1


def scrub(text: str) -> str:
    """`text` as it may be logged: registered secrets, URL secrets and secret-shaped strings removed."""
    global _memo_generation
    if _memo_generation != SCRUBBER.generation:
        _MEMO.clear()
        _memo_generation = SCRUBBER.generation
    done = _MEMO.get(text)
    if done is None:
        done = _SHAPES.redact(SCRUBBER.scrub(text))
        if len(text) <= _MEMO_TEXT_CHARS:
            if len(_MEMO) >= _MEMO_ENTRIES:
                _MEMO.clear()
            _MEMO[text] = done
    return done


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


class LineWriter:
    """structlog's logger: each rendered line goes out in ONE write (`print` makes two, which an
    unbuffered stream — `PYTHONUNBUFFERED`, as in the image — turns into two system calls), flushed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._stream.write(message + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


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
    writer = LineWriter(out)  # one for every logger: one lock per stream
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
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())
