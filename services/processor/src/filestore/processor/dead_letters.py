"""The dead-letter subject: messages nobody could (or ever will) handle, kept as received on
``{prefix}.dead.{original subject}`` in the FILES stream, with why in the headers. ProcessorService
lists them, and replays those that are events.

Two writers: the worker (events that kept failing, and messages that are not events) and the bridges
of stores that send JSON notifications (notifications that do not parse). One header vocabulary for
both, so that ListDeadLetters reads every letter the same way.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from filestore.server import events

__all__ = [
    "DEAD_LETTER_DELIVERIES",
    "DEAD_LETTER_DETAIL",
    "DEAD_LETTER_REASON",
    "publish_dead_letter",
]

DEAD_LETTER_REASON = "Filestore-Reason"
DEAD_LETTER_DELIVERIES = "Filestore-Deliveries"
#: Why a message was malformed, in a short sentence (dead letters of malformed messages only).
DEAD_LETTER_DETAIL = "Filestore-Detail"


async def publish_dead_letter(
    js: JetStreamContext,
    subjects: events.Subjects,
    *,
    subject: str,
    data: bytes,
    reason: str,
    deliveries: int,
    msg_id: str,
    detail: str = "",
) -> None:
    """``data`` as received on ``subject``, on its dead-letter subject. ``msg_id`` names the message
    at its source (a stream sequence, a queue's message id), so a delivery that dies before its ack
    and comes back does not publish its dead letter twice."""
    headers = {
        DEAD_LETTER_REASON: reason,
        DEAD_LETTER_DELIVERIES: str(deliveries),
        "Nats-Msg-Id": msg_id,
    }
    if detail:
        headers[DEAD_LETTER_DETAIL] = detail
    await js.publish(subjects.dead_letter(subject), data, headers=headers)
