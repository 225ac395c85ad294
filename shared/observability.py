"""Logging and metrics set up once per process.

Logs never carry phone numbers, tokens or message bodies at info level: callers log ids only.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
}

#: Latency buckets in seconds: alerts should move in milliseconds, providers take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


#: The alert a task is working on. The edge sets it to the new alert's id, every consumer to the
#: id of the alert in the message it handles, so one id follows an alert through all three
#: services' logs. A ContextVar: each asyncio task (one per send) keeps its own.
_CORRELATION_ID: ContextVar[str | None] = ContextVar("buurtalert_correlation_id", default=None)


def set_correlation_id(value: str | None) -> None:
    """Tag this task's log records (and the tasks it starts) with an alert's id."""
    _CORRELATION_ID.set(value or None)


def correlation_id() -> str | None:
    """The alert id this task's log records carry, if any."""
    return _CORRELATION_ID.get()


class CorrelationFilter(logging.Filter):
    """Adds `correlation_id` to every record passing the handler, unless the call gave one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; never drops one."""
        if not hasattr(record, "correlation_id"):
            value = _CORRELATION_ID.get()
            if value is not None:
                record.correlation_id = value
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields (ids, never bodies) kept."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(service: str, level: str = "INFO", json_logs: bool = False) -> None:
    """Configure stdlib logging for this process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationFilter())
    if json_logs:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(_TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs full URLs at info, and provider URLs carry bot tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class _TextFormatter(logging.Formatter):
    """One line for a terminal; the correlation id, when there is one, at the end."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as text."""
        line = super().format(record)
        value = getattr(record, "correlation_id", None)
        return f"{line} [{value}]" if value else line


def latency_histogram(
    registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()
) -> Histogram:
    """A latency histogram in seconds on the service registry."""
    return Histogram(name, doc, labels, registry=registry, buckets=LATENCY_BUCKETS)
