"""The one publish path of every storage-event bridge: an ``ObjectCreated`` onto the FILES stream under
its object version's ``Nats-Msg-Id``. The id is the one the broker's CompleteUpload uses, so whichever
of the store's notification and the broker's announcement comes second (and any notification a store
or a queue delivers twice) is dropped by JetStream within its duplicate window.
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext

from filestore.server import events
from filestore.v1 import events_pb2

__all__ = ["announce_created"]

log = structlog.get_logger("filestore.processor.bridge")


async def announce_created(
    js: JetStreamContext, subjects: events.Subjects, event: events_pb2.ObjectCreated, **context: object
) -> bool:
    """Publish ``event``; True when JetStream had it already. ``context`` goes into the log line."""
    msg_id = events.object_created_msg_id(event)
    duplicate = await events.publish(js, subjects.object_created, event, msg_id=msg_id)
    log.info(
        "bridge_published",
        key=event.key,
        etag=event.etag,
        size=event.size,
        source=events_pb2.EventSource.Name(event.source),
        duplicate=duplicate,
        **context,
    )
    return duplicate
