"""Logging set-up: JSON lines on stderr, from structlog and from the standard library alike.

Our own events go through structlog's native logger (no stdlib round trip on the request path);
records from libraries that use `logging` (uvicorn, SQLAlchemy, Alembic) are rendered by the same
processors through one root handler, so a log shipper sees a single format with `request_id`
wherever one is bound.
"""

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from apiforge.core.settings import Settings


def _dumps(value: Any, **kwargs: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, **kwargs).decode()


class _StderrLogger:
    """structlog's final logger: writes to whatever `sys.stderr` is at the time of the call
    (`PrintLogger` binds the stream once, which test capture and redirection then miss)."""

    def msg(self, message: str) -> None:
        stream: TextIO = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_LOGGER = _StderrLogger()


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _LOGGER


class _StderrHandler(logging.Handler):
    """Like `logging.lastResort`: resolves `sys.stderr` per record instead of binding it once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(settings: Settings) -> structlog.typing.Processor:
    if settings.log_json:
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(settings: Settings) -> None:
    """Idempotent: each call replaces the previous configuration (tests build many apps)."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer = _renderer(settings)
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn installs its own handlers when it configures logging; send its records to ours.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # AccessLogMiddleware is the access log. uvicorn writes its own only while `uvicorn.access`
    # has a handler (checked per connection), so detaching it prevents duplicate lines however
    # the server was started.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
