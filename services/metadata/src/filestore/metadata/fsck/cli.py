"""``filestore-fsck [--repair] [--json] [--grace-s S] [--tenant T ...]``: settings from the environment,
the command line, and the report printed as text or JSON. ``filestore fsck`` (the client's command line)
calls :func:`main` too."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TextIO

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.core.identity import is_tenant
from filestore.metadata.fsck.reconciler import FsckError, run
from filestore.metadata.fsck.report import PROGRAM
from filestore.metadata.fsck.scan import DEFAULT_GRACE, FsckOptions
from filestore.metadata.settings import database_url_from_env
from filestore.server.settings import S3Settings
from filestore.server.storage import StoreSet

__all__ = ["FsckSettings", "main"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FsckSettings:
    """The metadata service's database, storage (with List, Read and Write on the bucket), grace."""

    database_url: str
    s3: S3Settings
    grace: timedelta
    #: Every store: ``s3``'s and ``FILESTORE_STORES``' (each record is checked in its store).
    stores: StoreSet | None = None

    @classmethod
    def from_env(cls, env: Env | None = None) -> FsckSettings:
        env = env or Env()
        grace_s = env.number(f"{PREFIX}FSCK_GRACE_S", DEFAULT_GRACE.total_seconds(), minimum=0.0)
        database_url = database_url_from_env(env)
        s3 = S3Settings.from_env(env)
        return cls(
            database_url=database_url,
            s3=s3,
            grace=timedelta(seconds=grace_s),
            stores=StoreSet.from_env(env, s3),
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Compare the Filestore catalogue with storage: objects without records, records without "
            "objects, stale multipart uploads, drifted reference counts, derivatives without parents. "
            "Reads FILESTORE_DATABASE_URL and FILESTORE_S3_* like the services. Exit status: 0 clean "
            "(or all repaired), 1 findings remain, 2 could not check."
        ),
    )
    parser.add_argument("--repair", action="store_true", help="fix what is found (default: report only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--grace-s",
        type=float,
        metavar="SECONDS",
        help=f"leave objects and uploads younger than this alone (default: {PREFIX}FSCK_GRACE_S or "
        f"{DEFAULT_GRACE.total_seconds():g})",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="TENANT",
        help="check only this tenant (repeatable; default: all)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``filestore-fsck [--repair] [--json] [--grace-s S] [--tenant T ...]``; answers the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:  # argparse has printed the usage or the help
        return exited.code if isinstance(exited.code, int) else 2
    if args.grace_s is not None and args.grace_s < 0:
        print(f"{PROGRAM}: --grace-s must not be negative", file=err)
        return 2
    for tenant in args.tenant:
        if not is_tenant(tenant):
            # It names no keys: every key's tenant follows the grammar.
            print(
                f"{PROGRAM}: --tenant {tenant[:80]!r} is not a tenant ([A-Za-z0-9][A-Za-z0-9._-]{{0,62}})",
                file=err,
            )
            return 2
    try:
        settings = FsckSettings.from_env(Env(environ))
    except SettingsError as error:
        print(f"{PROGRAM}: configuration error: {error}", file=err)
        return 2
    options = FsckOptions(
        database_url=settings.database_url,
        s3=settings.s3,
        stores=settings.stores,
        repair=args.repair,
        grace=timedelta(seconds=args.grace_s) if args.grace_s is not None else settings.grace,
        tenants=tuple(dict.fromkeys(args.tenant)),
    )
    try:
        report = asyncio.run(run(options))
    except FsckError as error:
        print(f"{PROGRAM}: could not check: {error}", file=err)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(report.render_text(), file=out)
    return report.exit_code
