"""The lifecycle job: does what tenants' lifecycle rules made due, and restores archived files.

The catalogue decides and records (MetadataService.ClaimLifecycleActions, CompleteLifecycleAction);
this job moves the bytes in between, and announces each action done (FileLifecycleChanged on
``files.file.lifecycle``). It runs in the processor because the processor holds the storage identity
that may rewrite originals (the download signer only reads, metadata only deletes) and the event
publisher; several processors may run it at once, since each action is leased to one of them.

Every step of an action can be done again with the same end state, which is what makes a job that
stopped halfway resumable by the next run (its leases lapse, the catalogue answers its actions
again):

1. the storage step: a tier change reads the object's class first and copies only when it differs
   (a copy onto itself with the new ``StorageClass``, or a copy to another store that is skipped when
   the target holds the object already); expiry and purge have none (the catalogue and its janitor
   do them);
2. CompleteLifecycleAction: records the action DONE with its effect; again, it answers it as it is;
3. the event, with ``Nats-Msg-Id`` the action's id, so a second publish is dropped by JetStream;
4. CompleteLifecycleAction with ``announced``.

Time comes from the caller (``now``): rules are evaluated, and leases counted, at the job's clock, so
tests (and a dry run asking "what would happen in 90 days") pass a clock of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core.channels import translated_errors
from filestore.core.errors import FailedPrecondition
from filestore.core.reasons import Reason
from filestore.server import events
from filestore.server.storage import DEFAULT_STORE, ObjectStore
from filestore.v1 import events_pb2, metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

__all__ = ["LifecycleJob", "LifecycleRun", "LifecycleScheduler", "describe"]

log = structlog.get_logger("filestore.processor.lifecycle")

Action = metadata_service_pb2.LifecycleAction
Kind = metadata_service_pb2.LifecycleActionKind
State = metadata_service_pb2.LifecycleActionState

#: Claims per run at most: a bound on a run that keeps finding work it cannot finish.
MAX_ROUNDS = 1000


def describe(action: Action) -> str:
    """One line for a person: what the action does to which file."""
    kind = Kind.Name(action.kind).removeprefix("LIFECYCLE_ACTION_KIND_")
    where = ""
    if action.kind in (Kind.LIFECYCLE_ACTION_KIND_TRANSITION, Kind.LIFECYCLE_ACTION_KIND_RESTORE):
        where = (
            f" {action.source_store}/{action.source_storage_class}"
            f" -> {action.target_store}/{action.target_storage_class}"
        )
    rule = f" (rule {action.rule_id})" if action.rule_id else ""
    return f"{kind} {action.file_id}{where}{rule}"


@dataclass(slots=True)
class LifecycleRun:
    """What one run did (or, for a dry run, would do)."""

    #: The actions claimed (a dry run's: those it would claim), in order.
    actions: list[Action] = field(default_factory=list)
    #: Actions done and announced by this run.
    done: int = 0
    #: Actions whose precondition no longer held when they were recorded (nothing changed).
    dropped: int = 0


class LifecycleJob:
    def __init__(
        self,
        metadata: MetadataServiceAsyncStub,
        stores: Mapping[str, ObjectStore],
        jetstream: JetStreamContext | None,
        *,
        subjects: events.Subjects,
        limit: int = 100,
        lease_s: int = 300,
    ) -> None:
        """``jetstream`` None: a job that only dry-runs (it publishes nothing)."""
        self._metadata = metadata
        self._stores = dict(stores)
        self._js = jetstream
        self._subjects = subjects
        self._limit = limit
        self._lease_s = lease_s

    async def run(
        self,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
        tenant: str = "",
        after_storage_step: Callable[[Action], Awaitable[None]] | None = None,
    ) -> LifecycleRun:
        """Claim and do due actions until none is left (a dry run: list one claim's worth).

        ``after_storage_step`` is a test's fault injection: called between an action's storage step
        and its record in the catalogue, it may raise to stop the run there, as a crash would."""
        report = LifecycleRun()
        seen: set[str] = set()
        for _ in range(MAX_ROUNDS):
            request = metadata_service_pb2.ClaimLifecycleActionsRequest(
                limit=self._limit, lease_seconds=self._lease_s, dry_run=dry_run, tenant=tenant
            )
            if now is not None:
                request.now.CopyFrom(_timestamp(now))
            with translated_errors():
                claimed = await self._metadata.ClaimLifecycleActions(request)
            report.actions.extend(claimed.actions)
            if dry_run or not claimed.actions:
                break
            fresh = [action for action in claimed.actions if action.id not in seen]
            if not fresh:
                break
            for action in fresh:
                seen.add(action.id)
                dropped = await self.perform(action, now=now, after_storage_step=after_storage_step)
                report.dropped += dropped
                report.done += not dropped
        log.info(
            "lifecycle_run",
            dry_run=dry_run,
            claimed=len(report.actions),
            done=report.done,
            dropped=report.dropped,
        )
        return report

    async def perform(
        self,
        action: Action,
        *,
        now: datetime | None = None,
        after_storage_step: Callable[[Action], Awaitable[None]] | None = None,
    ) -> bool:
        """Do one claimed action to the end (storage, record, event, announced); whether it was
        dropped (its precondition no longer held)."""
        if action.state == State.LIFECYCLE_ACTION_STATE_CLAIMED:
            await self._storage_step(action)
            if after_storage_step is not None:
                await after_storage_step(action)
        completed = await self._complete(action, now=now, announced=False)
        if completed.dropped:
            log.info("lifecycle_action_dropped", action=describe(action))
            await self._undo_copy(action, completed.file)
            return True
        if (
            action.kind == Kind.LIFECYCLE_ACTION_KIND_TRANSITION
            and action.source_store != action.target_store
        ):
            # The catalogue names the new store: the old one's copy is no record's any more.
            await self._store(action.source_store).delete(action.storage_key)
        await self._announce(completed.action, completed.file)
        await self._complete(action, now=now, announced=True)
        log.info("lifecycle_action_done", action=describe(action))
        return False

    async def _storage_step(self, action: Action) -> None:
        if action.kind not in (Kind.LIFECYCLE_ACTION_KIND_TRANSITION, Kind.LIFECYCLE_ACTION_KIND_RESTORE):
            return
        target = self._store(action.target_store)
        key = action.storage_key
        if action.target_store != action.source_store and await target.storage_class(key) is None:
            await target.copy_from(self._store(action.source_store), key)
        if await target.storage_class(key) != action.target_storage_class:
            await target.set_storage_class(key, action.target_storage_class)

    async def _undo_copy(self, action: Action, file: resources_pb2.File) -> None:
        """A cross-store move the catalogue refused leaves a copy no record names: delete it (not
        when the file is in that store after all)."""
        moved = (
            action.kind == Kind.LIFECYCLE_ACTION_KIND_TRANSITION
            and action.source_store != action.target_store
        )
        if moved and (file.store or DEFAULT_STORE) != action.target_store:
            await self._store(action.target_store).delete(action.storage_key)

    async def _complete(
        self, action: Action, *, now: datetime | None, announced: bool
    ) -> metadata_service_pb2.CompleteLifecycleActionResponse:
        request = metadata_service_pb2.CompleteLifecycleActionRequest(
            action_id=action.id, announced=announced
        )
        if now is not None:
            request.now.CopyFrom(_timestamp(now))
        with translated_errors():
            answer: metadata_service_pb2.CompleteLifecycleActionResponse = (
                await self._metadata.CompleteLifecycleAction(request)
            )
        return answer

    async def _announce(self, action: Action, file: resources_pb2.File) -> None:
        if self._js is None:
            raise RuntimeError("this lifecycle job has no event publisher (a dry-run-only job)")
        event = events_pb2.FileLifecycleChanged(
            file_id=file.id,
            tenant=file.tenant,
            action_id=action.id,
            rule_id=action.rule_id,
            action=Kind.Name(action.kind).removeprefix("LIFECYCLE_ACTION_KIND_"),
            store=file.store,
            storage_class=file.storage_class,
            readable=file.status == resources_pb2.FILE_STATUS_READY and not file.archived,
            event_time=_timestamp(datetime.now(UTC)),
        )
        await events.publish(self._js, self._subjects.file_lifecycle, event, msg_id=f"lifecycle-{action.id}")

    def _store(self, name: str) -> ObjectStore:
        store = self._stores.get(name or DEFAULT_STORE)
        if store is None:
            raise FailedPrecondition(
                f"store {name!r} is not configured here",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": name},
            )
        return store


class LifecycleScheduler:
    """Runs the job every ``interval_s`` in the background (the processor's; each replica may, the
    leases keep them apart). A failed run is logged and the next one tries again."""

    def __init__(self, job: LifecycleJob, *, interval_s: float) -> None:
        self._job = job
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._job.run()
            except Exception as error:  # the next run tries again; nothing is lost meanwhile
                log.warning("lifecycle_run_failed", error=str(error))


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp
