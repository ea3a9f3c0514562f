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
from sqlalchemy.exc import StatementError

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


def _logged_exception(exc_info: object) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return None


def _hide_sql_parameters(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A database error's text lists the statement's bound values (passwords' hashes, emails,
    args marked `sensitive`, record values): its traceback keeps the SQL, not the values, as
    `hide_parameters=True` would print it. Must run before `format_exc_info`."""
    pending = [_logged_exception(event_dict.get("exc_info"))]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, StatementError):
            exc.hide_parameters = True
        pending += [exc.__cause__, exc.__context__]
        if isinstance(exc, BaseExceptionGroup):
            pending += exc.exceptions
    return event_dict


_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _Escaped:
    """A text the console renderer prints as its `repr`: control characters escaped."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)

    __str__ = __repr__


_MULTILINE = frozenset({"exception", "stack"})  # tracebacks: lines on purpose


def _escape_control_characters(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The console renderer quotes a value holding a space or a newline, but writes ESC, the other
    control characters and Unicode line separators raw: a client's path, method or header would
    then recolour, rewrite or split an operator's terminal lines. (JSON escapes them itself.)"""
    for key, value in event_dict.items():
        if isinstance(value, str) and key not in _MULTILINE and not value.isprintable():
            event_dict[key] = _Escaped(value)
    return event_dict


# Libraries whose records below WARNING carry secrets, kept at WARNING or above whatever the
# level: aiosqlite's DEBUG lines print every statement with its bound values (password hashes,
# sensitive args, record values), httpx's INFO line each outbound URL whole (an `httpRequest`
# step's query may hold an app secret), httpcore's DEBUG lines an upstream's answer headers.
_QUIETED = ("aiosqlite", "httpx", "httpcore")


def _renderers(settings: Settings) -> list[structlog.typing.Processor]:
    if settings.log_json:
        return [structlog.processors.JSONRenderer(serializer=_dumps)]
    return [_escape_control_characters, structlog.dev.ConsoleRenderer(colors=False)]


def configure_logging(settings: Settings) -> None:
    """Idempotent: each call replaces the previous configuration (tests build many apps)."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderers = _renderers(settings)
    structlog.configure(
        processors=[
            *_SHARED,
            _hide_sql_parameters,
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _hide_sql_parameters,
            structlog.processors.format_exc_info,
            *renderers,
        ],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIETED:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
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
