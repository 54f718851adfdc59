"""Tiers and lifecycle: tenants' rules, the durable log of the actions they make due, legal holds.

The catalogue decides what is due (:func:`claim_actions`, evaluated at the job's ``now``) and records
what was done (:func:`complete_action`); the job (the processor's ``filestore-lifecycle``) moves the
bytes in between. Every action is a row keyed by (file, rule, kind): claiming one leases it, so of
several jobs one acts; a job that stops leaves its lease to lapse and the next claim answers the
action again; a DONE row is never due again. That log is what makes a run resumable and a re-run a
no-op, and what ``filestore info`` shows.

Expiry is a soft delete that keeps the bytes: the file becomes DELETED (its quota refunded, its
blob reference released, as :func:`.files.delete_file` does) but the objects that left unneeded are
written in the action, and deleted only by the PURGE after the rule's grace, and then only those no
live record needs by then (a deduplicated blob another file still references stays).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import NotFound
from filestore.core.reasons import Reason
from filestore.metadata.db.models import (
    ARCHIVE_STORAGE_CLASSES,
    READABLE_STORAGE_CLASS,
    Blob,
    Derivative,
    File,
    FileStatus,
    LifecycleAction,
    LifecycleActionKind,
    LifecycleActionState,
    LifecycleRule,
    Replica,
    new_id,
    utcnow,
)
from filestore.metadata.db.store._sql import Executor, _load_file, _upsert
from filestore.metadata.db.store.files import FileFilter, _filter_conditions, _transition

__all__ = [
    "EXPIRED_REASON",
    "ActionCompletion",
    "ClaimedAction",
    "RuleSpec",
    "begin_restore",
    "claim_actions",
    "complete_action",
    "get_action",
    "get_rules",
    "keys_awaiting_purge",
    "list_actions",
    "set_legal_hold",
    "set_rules",
]

#: The ``status_reason`` of a file a lifecycle rule expired.
EXPIRED_REASON = "LIFECYCLE_EXPIRED"
#: States a rule may expire a file from: the pipeline is done with it (an upload in flight is not
#: expired under its uploader).
_EXPIRABLE = (FileStatus.READY, FileStatus.QUARANTINED, FileStatus.FAILED)
_FINISHED = (LifecycleActionState.DONE, LifecycleActionState.ANNOUNCED)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as SetLifecycleRules gives it, checked by the servicer."""

    id: str
    after_seconds: int
    action: LifecycleActionKind
    name_prefix: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    target_store: str | None = None
    target_storage_class: str = READABLE_STORAGE_CLASS
    purge_after_seconds: int = 0


async def get_rules(db: Executor, *, tenant: str) -> list[LifecycleRule]:
    rows = await db.execute(
        select(LifecycleRule).where(LifecycleRule.tenant == tenant).order_by(LifecycleRule.id)
    )
    return list(rows.scalars())


async def set_rules(session: AsyncSession, *, tenant: str, rules: Sequence[RuleSpec]) -> list[LifecycleRule]:
    """Replace the tenant's rules. The actions already logged stay: they are keyed by rule id."""
    await session.execute(delete(LifecycleRule).where(LifecycleRule.tenant == tenant))
    for rule in rules:
        session.add(
            LifecycleRule(
                tenant=tenant,
                id=rule.id,
                name_prefix=rule.name_prefix,
                labels=dict(rule.labels),
                after_seconds=rule.after_seconds,
                action=rule.action,
                target_store=rule.target_store,
                target_storage_class=rule.target_storage_class,
                purge_after_seconds=rule.purge_after_seconds,
            )
        )
    await session.flush()
    return await get_rules(session, tenant=tenant)


# ------------------------------------------------------------------------------------ claims


@dataclass(frozen=True, slots=True)
class ClaimedAction:
    """An action and its file, as the job needs them. ``planned``: a dry run's, never stored."""

    action: LifecycleAction
    file: File
    planned: bool = False


def _no_action(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return ~exists().where(LifecycleAction.file_id == File.id, *conditions)


def _selected(rule: LifecycleRule, now: datetime) -> list[ColumnElement[bool]]:
    """The rule's selector and age, on ``files``."""
    conditions = _filter_conditions(
        FileFilter(
            statuses=frozenset(_EXPIRABLE),
            labels=rule.labels or None,
            name_prefix=rule.name_prefix or None,
        )
    )
    return [
        File.tenant == rule.tenant,
        File.created_at <= now - timedelta(seconds=rule.after_seconds),
        # One action on a file at a time (a restore in progress included).
        _no_action(LifecycleAction.state == LifecycleActionState.CLAIMED),
        *conditions,
    ]


async def _due_transitions(
    session: AsyncSession, rule: LifecycleRule, colder: Sequence[str], now: datetime, limit: int
) -> list[File]:
    target_class = rule.target_storage_class
    moves = (
        File.storage_class != target_class
        if rule.target_store is None
        else or_(File.store != rule.target_store, File.storage_class != target_class)
    )
    shared = exists().where(Blob.id == File.blob_id, Blob.ref_count > 1)
    stmt = (
        select(File)
        .where(
            *_selected(rule, now),
            File.status == FileStatus.READY,
            moves,
            # A deduplicated object is every sharing file's bytes: one file's rule does not move the
            # others' (it moves once the content is the file's alone).
            ~shared,
            # Once this rule (or a rule that moves files later, so colder) moved it, it stays where
            # it went: a restored file is not archived again, nor moved back to a warmer tier.
            _no_action(
                LifecycleAction.kind == LifecycleActionKind.TRANSITION,
                LifecycleAction.rule_key.in_([rule.id, *colder]),
            ),
        )
        .order_by(File.created_at, File.id)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def _due_expiries(session: AsyncSession, rule: LifecycleRule, now: datetime, limit: int) -> list[File]:
    stmt = (
        select(File)
        .where(
            *_selected(rule, now),
            File.legal_hold.is_(False),
            _no_action(
                LifecycleAction.kind == LifecycleActionKind.EXPIRE, LifecycleAction.rule_key == rule.id
            ),
        )
        .order_by(File.created_at, File.id)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def _due_purges(session: AsyncSession, rule: LifecycleRule, now: datetime, limit: int) -> list[File]:
    expired = (
        select(LifecycleAction.file_id)
        .where(
            LifecycleAction.rule_key == rule.id,
            LifecycleAction.kind == LifecycleActionKind.EXPIRE,
            LifecycleAction.state.in_(_FINISHED),
            LifecycleAction.done_at <= now - timedelta(seconds=rule.purge_after_seconds),
        )
        .scalar_subquery()
    )
    stmt = (
        select(File)
        .where(
            File.tenant == rule.tenant,
            File.id.in_(expired),
            File.status == FileStatus.DELETED,
            File.legal_hold.is_(False),
            _no_action(
                LifecycleAction.kind == LifecycleActionKind.PURGE, LifecycleAction.rule_key == rule.id
            ),
        )
        .order_by(File.created_at, File.id)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


def _new_action(
    file: File, *, rule_key: str, kind: LifecycleActionKind, store: str, storage_class: str
) -> LifecycleAction:
    return LifecycleAction(
        id=new_id(),
        file_id=file.id,
        tenant=file.tenant,
        rule_key=rule_key,
        kind=kind,
        state=LifecycleActionState.CLAIMED,
        source_store=file.store,
        source_storage_class=file.storage_class,
        target_store=store,
        target_storage_class=storage_class,
        details={},
        # The service's clock, not the job's: the log lists actions in the order they were taken.
        created_at=utcnow(),
    )


async def _insert_claimed(session: AsyncSession, action: LifecycleAction, lease_until: datetime) -> bool:
    """Log the action as claimed; False when another job logged it first (the unique key)."""
    values = {column.key: getattr(action, column.key) for column in LifecycleAction.__table__.columns}
    values["lease_until"] = lease_until
    stmt = _upsert(session, LifecycleAction, values).on_conflict_do_nothing(
        index_elements=[LifecycleAction.file_id, LifecycleAction.rule_key, LifecycleAction.kind]
    )
    inserted = await session.execute(stmt.returning(LifecycleAction.id))
    return inserted.first() is not None


async def claim_actions(
    session: AsyncSession,
    *,
    now: datetime,
    lease_s: int,
    limit: int,
    dry_run: bool,
    tenant: str | None = None,
) -> list[ClaimedAction]:
    """Lease up to ``limit`` actions (see ClaimLifecycleActions); with ``dry_run`` only list them."""
    lease_until = now + timedelta(seconds=lease_s)
    claimed: list[ClaimedAction] = []
    # First what earlier jobs left: CLAIMED actions whose job stopped, DONE ones not announced.
    lapsed_stmt = (
        select(LifecycleAction, File)
        .join(File, File.id == LifecycleAction.file_id)
        .where(
            LifecycleAction.state.in_([LifecycleActionState.CLAIMED, LifecycleActionState.DONE]),
            or_(LifecycleAction.lease_until.is_(None), LifecycleAction.lease_until <= now),
        )
        .order_by(LifecycleAction.created_at, LifecycleAction.id)
        .limit(limit)
    )
    if tenant is not None:
        lapsed_stmt = lapsed_stmt.where(LifecycleAction.tenant == tenant)
    for action, file in (await session.execute(lapsed_stmt)).tuples():
        if not dry_run:
            action.lease_until = lease_until
        claimed.append(ClaimedAction(action=action, file=file, planned=dry_run))
    taken = {item.file.id for item in claimed}

    rules_stmt = select(LifecycleRule).order_by(LifecycleRule.tenant, LifecycleRule.id)
    if tenant is not None:
        rules_stmt = rules_stmt.where(LifecycleRule.tenant == tenant)
    rules = list((await session.scalars(rules_stmt)).all())
    # Expiry before transitions (a file about to expire need not move), later (colder) moves before
    # earlier ones: a file due for two moves at once goes straight to the colder tier.
    order = {LifecycleActionKind.EXPIRE: 0, LifecycleActionKind.TRANSITION: 1}
    rules.sort(key=lambda rule: (order.get(rule.action, 2), -rule.after_seconds, rule.tenant, rule.id))
    for rule in rules:
        room = limit - len(claimed)
        if room <= 0:
            break
        due: list[tuple[File, LifecycleActionKind, str, str]] = []
        if rule.action == LifecycleActionKind.EXPIRE:
            for file in await _due_purges(session, rule, now, room):
                due.append((file, LifecycleActionKind.PURGE, file.store, file.storage_class))
            for file in await _due_expiries(session, rule, now, room):
                due.append((file, LifecycleActionKind.EXPIRE, file.store, file.storage_class))
        elif rule.action == LifecycleActionKind.TRANSITION:
            colder = [
                other.id
                for other in rules
                if other.tenant == rule.tenant
                and other.action == LifecycleActionKind.TRANSITION
                and other.after_seconds > rule.after_seconds
            ]
            for file in await _due_transitions(session, rule, colder, now, room):
                due.append(
                    (
                        file,
                        LifecycleActionKind.TRANSITION,
                        rule.target_store or file.store,
                        rule.target_storage_class,
                    )
                )
        for file, kind, store, storage_class in due:
            if file.id in taken or len(claimed) >= limit:
                continue
            action = _new_action(file, rule_key=rule.id, kind=kind, store=store, storage_class=storage_class)
            if not dry_run and not await _insert_claimed(session, action, lease_until):
                continue
            taken.add(file.id)
            claimed.append(ClaimedAction(action=action, file=file, planned=dry_run))
    return claimed


async def get_action(session: AsyncSession, *, action_id: str) -> LifecycleAction:
    action = await session.scalar(
        select(LifecycleAction)
        .where(LifecycleAction.id == action_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if action is None:
        raise NotFound(
            "no such lifecycle action",
            reason=Reason.LIFECYCLE_ACTION_NOT_FOUND,
            metadata={"action_id": action_id[:64]},
        )
    return action


@dataclass(frozen=True, slots=True)
class ActionCompletion:
    action: LifecycleAction
    file: File
    #: The precondition no longer held: nothing was done, and the action was forgotten.
    dropped: bool = False
    #: Objects to delete after the commit (a PURGE's).
    purged_keys: list[str] = field(default_factory=list)


async def _needed_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Of ``keys``, those a live file, a blob or a derivative still names."""
    if not keys:
        return set()
    needed: set[str] = set()
    for statement in (
        select(File.storage_key).where(File.storage_key.in_(keys), File.status != FileStatus.DELETED),
        select(Blob.storage_key).where(Blob.storage_key.in_(keys)),
        select(Derivative.storage_key).where(Derivative.storage_key.in_(keys)),
    ):
        needed.update((await session.scalars(statement)).all())
    return needed


async def complete_action(
    session: AsyncSession, *, action_id: str, announced: bool, now: datetime
) -> ActionCompletion:
    """Record the action done with its effect (see CompleteLifecycleAction)."""
    action = await get_action(session, action_id=action_id)
    file = await _load_file(session, tenant=None, file_id=action.file_id, include_deleted=True)
    if action.state != LifecycleActionState.CLAIMED:
        if announced and action.state == LifecycleActionState.DONE:
            action.state = LifecycleActionState.ANNOUNCED
            action.lease_until = None
        return ActionCompletion(action=action, file=file)

    def dropped() -> ActionCompletion:
        return ActionCompletion(action=action, file=file, dropped=True)

    purged: list[str] = []
    if action.kind in (LifecycleActionKind.TRANSITION, LifecycleActionKind.RESTORE):
        if file.status != FileStatus.READY or (file.store, file.storage_class) != (
            action.source_store,
            action.source_storage_class,
        ):
            await session.delete(action)
            return dropped()
        moved = await session.scalar(
            update(File)
            .where(File.id == file.id, File.version == file.version)
            .values(
                store=action.target_store,
                storage_class=action.target_storage_class,
                version=File.version + 1,
                # The service's clock: ``now`` may be a test's (or a dry run's) future.
                updated_at=utcnow(),
            )
            .returning(File)
            .execution_options(populate_existing=True)
        )
        if moved is None:
            await session.delete(action)
            return dropped()
        file = moved
        if action.target_store != action.source_store:
            # The original is in its new store now: a replica there is the original, and the blob
            # (the file's alone: shared content does not move) lives where its object does.
            await session.execute(
                delete(Replica).where(Replica.file_id == file.id, Replica.store == action.target_store)
            )
            if file.blob_id is not None:
                await session.execute(
                    update(Blob).where(Blob.id == file.blob_id).values(store=action.target_store)
                )
    elif action.kind == LifecycleActionKind.EXPIRE:
        if file.legal_hold or file.status not in _EXPIRABLE:
            await session.delete(action)
            return dropped()
        file, kept = await _transition(
            session,
            tenant=None,
            file_id=file.id,
            to_status=FileStatus.DELETED,
            reason=EXPIRED_REASON,
            expected_version=None,
        )
        # Kept for the grace: the PURGE deletes them (those still unneeded then).
        action.details = {"keys": kept}
    elif action.kind == LifecycleActionKind.PURGE:
        if file.legal_hold or file.status != FileStatus.DELETED:
            await session.delete(action)
            return dropped()
        expiry = await session.scalar(
            select(LifecycleAction).where(
                LifecycleAction.file_id == file.id,
                LifecycleAction.rule_key == action.rule_key,
                LifecycleAction.kind == LifecycleActionKind.EXPIRE,
            )
        )
        keys = list((expiry.details or {}).get("keys", [])) if expiry is not None else []
        needed = await _needed_keys(session, keys)
        purged = [key for key in keys if key not in needed]
        action.details = {"keys": purged, "kept": sorted(needed)}
    action.state = LifecycleActionState.ANNOUNCED if announced else LifecycleActionState.DONE
    action.done_at = now
    return ActionCompletion(action=action, file=file, purged_keys=purged)


async def begin_restore(
    session: AsyncSession, *, file: File, now: datetime, lease_s: int
) -> LifecycleAction | None:
    """Claim the restore of an archived file (None: it is readable as it is). Keyed by the file's
    version, so asking again while one is under way claims that one again."""
    if file.storage_class not in ARCHIVE_STORAGE_CLASSES:
        return None
    action = _new_action(
        file,
        rule_key=f"restore/{file.version}",
        kind=LifecycleActionKind.RESTORE,
        store=file.store,
        storage_class=READABLE_STORAGE_CLASS,
    )
    values = {column.key: getattr(action, column.key) for column in LifecycleAction.__table__.columns}
    values["lease_until"] = now + timedelta(seconds=lease_s)
    stmt = _upsert(session, LifecycleAction, values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[LifecycleAction.file_id, LifecycleAction.rule_key, LifecycleAction.kind],
        set_={"lease_until": stmt.excluded.lease_until},
    )
    restored: LifecycleAction = (
        await session.scalars(stmt.returning(LifecycleAction), execution_options={"populate_existing": True})
    ).one()
    return restored


async def list_actions(db: Executor, *, file_id: str) -> list[LifecycleAction]:
    rows = await db.execute(
        select(LifecycleAction)
        .where(LifecycleAction.file_id == file_id)
        .order_by(LifecycleAction.created_at, LifecycleAction.id)
        .limit(100)
    )
    return list(rows.scalars())


async def set_legal_hold(session: AsyncSession, *, tenant: str, file_id: str, hold: bool) -> File:
    file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
    if file.legal_hold == hold:
        return file
    changed = await session.scalar(
        update(File)
        .where(File.id == file.id)
        .values(legal_hold=hold, version=File.version + 1, updated_at=utcnow())
        .returning(File)
        .execution_options(populate_existing=True)
    )
    assert changed is not None  # the row was just read in this transaction
    return changed


async def keys_awaiting_purge(db: Executor, *, file_ids: Sequence[str]) -> set[str]:
    """The objects expired files (of ``file_ids``) keep for their grace: no live record names them,
    but their PURGE, not the reconciler, decides when they go."""
    if not file_ids:
        return set()
    purged = (
        select(LifecycleAction.id)
        .where(
            LifecycleAction.file_id == File.id,
            LifecycleAction.kind == LifecycleActionKind.PURGE,
            LifecycleAction.state.in_(_FINISHED),
        )
        .correlate(File)
        .exists()
    )
    expiry = LifecycleAction.__table__.alias("expiry")
    rows = await db.execute(
        select(expiry.c.details)
        .join(File, File.id == expiry.c.file_id)
        .where(
            expiry.c.file_id.in_(sorted(file_ids)),
            expiry.c.kind == LifecycleActionKind.EXPIRE.value,
            expiry.c.state.in_([state.value for state in _FINISHED]),
            ~purged,
        )
    )
    return {key for (details,) in rows for key in (details or {}).get("keys", [])}
