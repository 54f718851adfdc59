"""How long a call to a dependency may take: never longer than the RPC being served has left.

The server bootstrap records each inbound RPC's deadline (:func:`serving`); every call a service makes
to a dependency while serving it (the metadata service over gRPC, storage, NATS) asks
:func:`call_timeout` for its timeout: the dependency's own bound, cut to the inbound deadline less a
margin. The margin is the time the service needs to turn the dependency's silence into an answer
(UNAVAILABLE with a reason naming the dependency) that still reaches its caller in time; without it
the caller would see its own DEADLINE_EXCEEDED and learn nothing.

Work that serves no RPC (the processor's worker, the broker's reaper, background deletions) has no
inbound deadline and gets each dependency's own bound.
"""

from __future__ import annotations

import contextvars
import time

__all__ = ["call_timeout", "outside_rpc", "remaining", "serving"]

#: The margin kept for answering: a tenth of the time left, between these bounds.
MIN_MARGIN_S = 0.05
MAX_MARGIN_S = 1.0

#: When the RPC being served must have answered (``time.monotonic()``), or None (no deadline, or
#: not serving an RPC). Each RPC runs in a task of its own, so each has its own value.
_inbound_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "filestore_inbound_deadline", default=None
)


def serving(time_remaining: float | None) -> None:
    """Record the deadline of the RPC the current task serves (``context.time_remaining()``)."""
    _inbound_deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def outside_rpc() -> None:
    """Forget the inbound deadline in the current task: for work started by an RPC that goes on
    after it answered (a task copies its creator's context, deadline included)."""
    _inbound_deadline.set(None)


def remaining() -> float | None:
    """Seconds left to the inbound deadline (negative once passed), or None."""
    deadline = _inbound_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def call_timeout(own_s: float | None) -> float | None:
    """The timeout of a call to a dependency: ``own_s`` (the dependency's own bound; None for
    none), cut to the inbound RPC's remaining time less the margin. None only when neither bounds it."""
    left = remaining()
    if left is None:
        return own_s
    margin = min(MAX_MARGIN_S, max(MIN_MARGIN_S, left / 10))
    budget = max(0.0, left - margin)
    return budget if own_s is None else min(own_s, budget)
