"""``filestore-lifecycle run [--now ISO] [--dry-run] [--tenant T] [--json]``: one run of the lifecycle
job (:mod:`filestore.processor.lifecycle`) with the processor's settings from the environment
(``FILESTORE_METADATA_ADDR``, ``FILESTORE_AUTH_SECRET``, ``FILESTORE_S3_*``, ``FILESTORE_STORES``,
``FILESTORE_NATS_URL``). Exit status: 0 done, 2 could not run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TextIO

from google.protobuf.json_format import MessageToDict

from filestore.core.auth import ServiceIdentity
from filestore.core.env import Env, SettingsError
from filestore.core.errors import FilestoreError
from filestore.processor.lifecycle import LifecycleJob, LifecycleRun, describe
from filestore.processor.settings import ProcessorSettings
from filestore.server import events
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import ObjectStore
from filestore.v1 import metadata_service_pb2_grpc

__all__ = ["main"]

PROGRAM = "filestore-lifecycle"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Run tenants' lifecycle rules once: tier changes, expiry, purge (docs/lifecycle.md). "
            "Safe to run while processors run it too, and again after a run that stopped halfway."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="claim and do what the rules made due")
    run.add_argument("--now", help="evaluate the rules at this ISO 8601 time (default: now)")
    run.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")
    run.add_argument("--tenant", default="", help="only this tenant's rules")
    run.add_argument("--json", action="store_true", help="print the actions as JSON")
    return parser


async def _run(
    settings: ProcessorSettings, *, now: datetime | None, dry_run: bool, tenant: str
) -> LifecycleRun:
    identity = ServiceIdentity(settings.auth.secret, service="processor")
    channel = dependency_channel(
        settings.metadata_address,
        token=identity.token,
        tls=settings.server.tls,
        dependency=METADATA,
        timeout_s=settings.metadata_timeout_s,
    )
    nats_client = None if dry_run else await events.connect(settings.nats, name=PROGRAM)
    try:
        job = LifecycleJob(
            metadata_service_pb2_grpc.MetadataServiceStub(channel),
            {config.name: ObjectStore(config) for config in settings.stores},
            None if nats_client is None else nats_client.jetstream(),
            subjects=events.Subjects(settings.nats.subject_prefix),
        )
        return await job.run(now=now, dry_run=dry_run, tenant=tenant)
    finally:
        if nats_client is not None:
            await nats_client.drain()
        await channel.close()


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else 2
    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(f"{PROGRAM}: --now {args.now[:40]!r} is not an ISO 8601 time", file=err)
            return 2
        now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    try:
        settings = ProcessorSettings.from_env(Env(environ))
    except SettingsError as error:
        print(f"{PROGRAM}: configuration error: {error}", file=err)
        return 2
    try:
        report = asyncio.run(_run(settings, now=now, dry_run=args.dry_run, tenant=args.tenant))
    except FilestoreError as error:
        print(f"{PROGRAM}: could not run: {error}", file=err)
        return 2
    if args.json:
        actions = [MessageToDict(action) for action in report.actions]
        print(
            json.dumps({"dry_run": args.dry_run, "actions": actions, "done": report.done}, indent=2), file=out
        )
    else:
        verb = "would do" if args.dry_run else "did"
        for action in report.actions:
            print(f"{verb}: {describe(action)}", file=out)
        print(f"{len(report.actions)} action(s); {report.done} done, {report.dropped} dropped", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
