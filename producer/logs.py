"""Log records that say which work they are about, and a JSON format for log collectors.

``work(job_id=…, stage=…)`` binds the job id, stage, attempt, batch and lane to everything
logged inside it (a context variable, so threads and tasks keep their own); ``WorkFilter`` puts
them on each record, and the JSON format (``IMGGEN_LOG_FORMAT=json``) writes them as fields.
The plain format, the default, stays as it was on a terminal.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("job_id", "stage", "attempt", "batch_id", "lane")
_current: ContextVar[dict[str, Any] | None] = ContextVar("imggen_work", default=None)


@contextlib.contextmanager
def work(**fields: Any) -> Iterator[None]:
    """Within this block, log records carry ``fields`` (any of ``FIELDS``)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log fields: {', '.join(sorted(unknown))}")
    token = _current.set({**(_current.get() or {}), **fields})
    try:
        yield
    finally:
        _current.reset(token)


class WorkFilter(logging.Filter):
    """Puts the bound work's fields on each record (None where unbound), for any formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _current.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, bound.get(name))
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{process}{message}{job_id}{stage}{attempt}{batch_id}{lane}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_default=str,
    )


def use_format(log_format: str, handlers: list[logging.Handler] | None = None) -> None:
    """Give ``handlers`` (default: the root logger's) the work fields and, for ``json``, the
    JSON format."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(existing, WorkFilter) for existing in handler.filters):
            handler.addFilter(WorkFilter())
        if log_format == "json":
            handler.setFormatter(json_formatter())


def uvicorn_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration in ``log_format`` (plain: uvicorn's own). In JSON,
    imggen's loggers write through the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    if log_format != "json":
        return LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter.clear()
        formatter["()"] = json_formatter
    config["filters"] = {"work": {"()": WorkFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["work"]
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config
