"""The lifecycle RPCs: a tenant's rules (GetLifecycleRules, SetLifecycleRules), legal holds
(SetLegalHold), the lifecycle job's claims and completions (ClaimLifecycleActions,
CompleteLifecycleAction), the processor's restores (BeginRestore) and a file's history
(ListLifecycleActions). What is due and what an action does to the catalogue are in
:mod:`filestore.metadata.db.store.lifecycle`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import current_principal, require_service
from filestore.core.errors import FailedPrecondition, InvalidArgument, file_not_found
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_NAME_CHARS, check_labels
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.db.models import LifecycleActionKind, utcnow
from filestore.metadata.db.store import lifecycle
from filestore.metadata.db.store._sql import _load_file
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.metadata.servicer.placement import check_store_names
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["LifecycleRpcs"]

#: The most rules a tenant may have.
MAX_RULES: Final = 64
MAX_CLAIM: Final = 500
DEFAULT_CLAIM: Final = 100
MAX_LEASE_S: Final = 3600
DEFAULT_LEASE_S: Final = 300
_RULE_ID: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_STORAGE_CLASS: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


def _bad_rule(index: int, field: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"rule {index}: {why}",
        reason=Reason.INVALID_LIFECYCLE_RULE,
        metadata={"rule": str(index), "field": field},
    )


class LifecycleRpcs(ServicerBase):
    def _rule_spec(
        self, index: int, rule: pb.LifecycleRule, residency: store.Residency
    ) -> lifecycle.RuleSpec:
        if not _RULE_ID.match(rule.id):
            raise _bad_rule(index, "id", "an id is 1-63 characters of [a-z0-9-]")
        action = convert.lifecycle_kind_from_proto(rule.action)
        if action not in (LifecycleActionKind.TRANSITION, LifecycleActionKind.EXPIRE):
            raise _bad_rule(index, "action", "the action is TRANSITION or EXPIRE")
        if rule.after_seconds < 0 or rule.purge_after_seconds < 0:
            raise _bad_rule(index, "after_seconds", "ages are 0 or more seconds")
        if len(rule.name_prefix) > MAX_NAME_CHARS:
            raise _bad_rule(index, "name_prefix", f"at most {MAX_NAME_CHARS} characters")
        target_store = rule.target_store or None
        target_class = rule.target_storage_class or models.READABLE_STORAGE_CLASS
        if action == LifecycleActionKind.TRANSITION:
            if target_store is not None:
                check_store_names([target_store])
                if not residency.allows(target_store):
                    raise _bad_rule(index, "target_store", "the tenant's residency excludes the store")
            if not _STORAGE_CLASS.match(target_class):
                raise _bad_rule(
                    index, "target_storage_class", "a storage class is UPPER_SNAKE, 1-32 characters"
                )
            if self._stores is not None:
                # Each store declares its classes; a rule naming no store must fit every store a
                # file of the tenant may be in.
                stores = [self._stores.get(target_store)] if target_store else list(self._stores)
                for config in stores:
                    if config is None:
                        raise _bad_rule(index, "target_store", "no such store is configured")
                    if target_class not in config.storage_classes:
                        raise _bad_rule(
                            index, "target_storage_class", f"store {config.name!r} does not declare it"
                        )
        elif rule.target_store or rule.target_storage_class:
            raise _bad_rule(index, "target_store", "only a TRANSITION has a target")
        return lifecycle.RuleSpec(
            id=rule.id,
            after_seconds=rule.after_seconds,
            action=action,
            name_prefix=rule.name_prefix,
            labels=check_labels(dict(rule.labels)),
            target_store=target_store,
            target_storage_class=target_class,
            purge_after_seconds=rule.purge_after_seconds,
        )

    async def GetLifecycleRules(
        self, request: pb.GetLifecycleRulesRequest, context: Context
    ) -> pb.LifecycleRules:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        async with self._unit.read() as session:
            rules = await lifecycle.get_rules(session, tenant=tenant)
        return pb.LifecycleRules(tenant=tenant, rules=[convert.lifecycle_rule(rule) for rule in rules])

    async def SetLifecycleRules(
        self, request: pb.SetLifecycleRulesRequest, context: Context
    ) -> pb.LifecycleRules:
        require_service()
        tenant = request.rules.tenant
        if not tenant:
            raise InvalidArgument("rules.tenant is required", reason=Reason.INVALID_TENANT)
        if len(request.rules.rules) > MAX_RULES:
            raise InvalidArgument(
                f"at most {MAX_RULES} rules", reason=Reason.TOO_MANY_VALUES, metadata={"max": str(MAX_RULES)}
            )

        async def set_rules(session: AsyncSession) -> pb.LifecycleRules:
            residency = await store.get_residency(session, tenant=tenant)
            specs = [self._rule_spec(i, rule, residency) for i, rule in enumerate(request.rules.rules)]
            ids = [spec.id for spec in specs]
            if len(set(ids)) != len(ids):
                raise _bad_rule(len(ids) - 1, "id", "rule ids are unique within the tenant")
            rules = await lifecycle.set_rules(session, tenant=tenant, rules=specs)
            return pb.LifecycleRules(tenant=tenant, rules=[convert.lifecycle_rule(rule) for rule in rules])

        return await self._unit.write(set_rules)

    async def SetLegalHold(self, request: pb.SetLegalHoldRequest, context: Context) -> resources_pb2.File:
        require_service()
        if not request.tenant:
            raise InvalidArgument("the tenant is required", reason=Reason.INVALID_TENANT)

        async def hold(session: AsyncSession) -> resources_pb2.File:
            file = await lifecycle.set_legal_hold(
                session, tenant=request.tenant, file_id=request.file_id, hold=request.legal_hold
            )
            return convert.file_message(file)

        return await self._unit.write(hold)

    async def ClaimLifecycleActions(
        self, request: pb.ClaimLifecycleActionsRequest, context: Context
    ) -> pb.ClaimLifecycleActionsResponse:
        require_service()
        if not 0 <= request.limit <= MAX_CLAIM:
            raise InvalidArgument(f"limit must be 0..{MAX_CLAIM}", reason=Reason.INVALID_LIMIT)
        if not 0 <= request.lease_seconds <= MAX_LEASE_S:
            raise InvalidArgument(f"lease_seconds must be 0..{MAX_LEASE_S}", reason=Reason.INVALID_LEASE)
        now = self._now(request.now if request.HasField("now") else None)

        async def claim(session: AsyncSession) -> pb.ClaimLifecycleActionsResponse:
            claimed = await lifecycle.claim_actions(
                session,
                now=now,
                lease_s=request.lease_seconds or DEFAULT_LEASE_S,
                limit=request.limit or DEFAULT_CLAIM,
                dry_run=request.dry_run,
                tenant=request.tenant or None,
            )
            actions = [
                convert.lifecycle_action(item.action, item.file, planned=item.planned) for item in claimed
            ]
            return pb.ClaimLifecycleActionsResponse(actions=actions)

        if request.dry_run:
            # A read-only transaction: whatever a dry run evaluates, nothing of it is written.
            async with self._unit.read() as session:
                return await claim(session)
        return await self._unit.write(claim)

    async def CompleteLifecycleAction(
        self, request: pb.CompleteLifecycleActionRequest, context: Context
    ) -> pb.CompleteLifecycleActionResponse:
        require_service()
        now = self._now(request.now if request.HasField("now") else None)
        purged: list[str] = []

        async def complete(session: AsyncSession) -> pb.CompleteLifecycleActionResponse:
            done = await lifecycle.complete_action(
                session, action_id=request.action_id, announced=request.announced, now=now
            )
            purged.extend(done.purged_keys)
            return pb.CompleteLifecycleActionResponse(
                action=convert.lifecycle_action(done.action, done.file),
                file=convert.file_message(done.file),
                dropped=done.dropped,
            )

        answer = await self._unit.write(complete)
        # After the commit, as DeleteFile does: bytes deleted first would be lost if it failed.
        await self._objects.delete(purged)
        return answer

    async def BeginRestore(
        self, request: pb.BeginRestoreRequest, context: Context
    ) -> pb.BeginRestoreResponse:
        require_service()
        if not request.tenant:
            raise InvalidArgument("the tenant is required", reason=Reason.INVALID_TENANT)

        async def begin(session: AsyncSession) -> pb.BeginRestoreResponse:
            file = await _load_file(
                session, tenant=request.tenant, file_id=request.file_id, include_deleted=False
            )
            if (
                request.principal
                and file.owner != request.principal
                and not await store.is_permitted(
                    session, file=file, principal=request.principal, permission=models.Permission.WRITE
                )
            ):
                raise file_not_found(request.file_id)
            if file.status != models.FileStatus.READY:
                raise FailedPrecondition(
                    "only a READY file is restored",
                    reason=Reason.FILE_NOT_READY,
                    metadata={"file_id": file.id},
                )
            action = await lifecycle.begin_restore(session, file=file, now=utcnow(), lease_s=DEFAULT_LEASE_S)
            answer = pb.BeginRestoreResponse(file=convert.file_message(file))
            if action is not None:
                answer.action.CopyFrom(convert.lifecycle_action(action, file))
            return answer

        return await self._unit.write(begin)

    async def ListLifecycleActions(
        self, request: pb.ListLifecycleActionsRequest, context: Context
    ) -> pb.ListLifecycleActionsResponse:
        principal = current_principal()
        async with self._unit.read() as session:
            file = await self._readable_file(
                session,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader="",
                include_deleted=True,
            )
            actions = await lifecycle.list_actions(session, file_id=file.id)
        return pb.ListLifecycleActionsResponse(actions=[convert.lifecycle_action(a, file) for a in actions])

    @staticmethod
    def _now(stamp: Timestamp | None) -> datetime:
        """The job's clock when it sends one (a test's, or a dry run's future), else the service's."""
        return convert.from_timestamp(stamp) if stamp is not None else utcnow()
