"""structlog configured once per process: JSON lines on stdout, context from contextvars first."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection

import structlog

from filestore.core.channels import REQUEST_ID_KEY

__all__ = ["configure_logging", "get_logger", "request_id_metadata"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", *, service: str) -> None:
    """JSON logs with ``service``, ``level`` and an ISO UTC timestamp on every line.

    ``merge_contextvars`` comes first so that what the RPC interceptor binds (method, request id,
    peer, principal) is on every line logged while the RPC runs.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def request_id_metadata(present: Collection[str]) -> list[tuple[str, str]]:
    """The request id of the RPC being served (bound to the log context by the server's logging
    interceptor) for an outgoing call (a channel's metadata source, see :mod:`filestore.server`), so
    that one request can be followed across services in the logs. A call that names its own keeps it."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if REQUEST_ID_KEY in present or not isinstance(request_id, str):
        return []
    return [(REQUEST_ID_KEY, request_id)]
