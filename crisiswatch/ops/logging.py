"""structlog set-up: readable on a terminal, JSON lines otherwise (journald, files, CI).

Logs go to stderr; stdout belongs to the command's own output (pages, backtest lines, CSV). The
libraries' logs (asyncprawcore, tweepy, slack_sdk, apscheduler, aiohttp) go through the same
renderer, and every line, ours or theirs, passes the secret redaction of `redact.py`.
"""

from __future__ import annotations

import logging
import sys

import structlog

from crisiswatch.ops.redact import redact_event

LEVELS = ("debug", "info", "warning", "error")


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of writing (it may be swapped later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # tracebacks become text before redaction, on a terminal too (the console renderer
        # would otherwise format them after it, secrets in exception messages included)
        structlog.processors.format_exc_info,
        redact_event,
    ]
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # libraries are chatty: their warnings and errors always, the rest only when debugging
    root.setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
