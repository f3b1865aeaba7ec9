"""Logging: structlog, JSON lines in a cluster, a readable console on a TTY.

Context (namespace, deployment, revision) is bound with `structlog.contextvars.bind_contextvars`
or `log.bind(...)` by the code that knows it; this module only configures the pipeline.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from daemon.settings import LogSettings


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None,
                      redact: structlog.types.Processor | None = None) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process.

    `redact` (the notifiers' `Redactor.structlog_processor`) runs just before rendering, so no
    secret reaches the log whatever a message or an exception text contains.
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
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *([redact] if redact is not None else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, force=True)
