"""``filestore``: upload, download, list, inspect, share and delete files; run the local stack and
check it with the reconciler (``filestore fsck``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as ProgressBar

from filestore.client.client import Client, FileInfo
from filestore.client.connection import (
    TLS_ENV_VARS,
    ConfigurationError,
    Endpoints,
    client_tls,
    default_stack_json,
)
from filestore.client.errors import FilestoreError
from filestore.client.progress import Progress, TransferEvent
from filestore.client.retry import is_retryable_error
from filestore.client.transfer import MIB, TransferOptions
from filestore.v1 import metadata_service_pb2, resources_pb2

__all__ = ["main"]

PROG = "filestore"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
quick start (a local stack, development tokens):
  filestore stack run &                   # or `make run`: SeaweedFS, NATS, the services
  filestore upload report.pdf --wait      # prints the file id
  filestore share FILE_ID                 # a short-lived download URL for anyone
  filestore share FILE_ID --with bob      # or let user bob of your tenant read it
  filestore download FILE_ID copy.pdf     # bob: add --user bob
  filestore ls; filestore info FILE_ID; filestore rm FILE_ID

finding the services (first match wins):
  --upload-addr/--metadata-addr/--download-addr and --token, or the environment variables
  FILESTORE_UPLOAD_ADDR, FILESTORE_METADATA_ADDR, FILESTORE_DOWNLOAD_ADDR and FILESTORE_TOKEN;
  otherwise the local stack's stack.json ($FILESTORE_HOME/stack.json, default .filestore/), with a
  development token minted for --user (FILESTORE_USER, default dev) of --tenant (FILESTORE_TENANT,
  default dev).

TLS: --ca-file (FILESTORE_TLS_CA_FILE) verifies the services and storage against a private CA;
  --client-cert/--client-key (FILESTORE_TLS_CLIENT_CERT_FILE, FILESTORE_TLS_CLIENT_KEY_FILE) present
  a certificate to services that demand one. A TLS stack's stack.json names all three itself.

interrupted uploads: run the same `filestore upload` again; only the missing parts are sent.
Resume state lives in $FILESTORE_STATE_DIR (default ~/.local/state/filestore/uploads).

every command takes --json: one JSON document on stdout (errors too), no progress bars.

exit status:
  0    success
  1    refused by Filestore or storage (not found, invalid input, quota...); the reason is printed
  2    usage or configuration error (bad arguments, no stack found, unreadable file)
  3    unavailable: a service or storage could not be reached, even after retries; try again
  130  interrupted (Ctrl-C); an upload resumes when run again
"""

_DURATION_RE = re.compile(r"^(\d+)([smhd])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _UsageError(Exception):
    pass


def _duration(text: str) -> timedelta:
    found = _DURATION_RE.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 12h or 7d")
    return timedelta(seconds=int(found.group(1)) * _DURATION_UNITS[found.group(2)])


def _size(text: str) -> int:
    found = re.fullmatch(r"(\d+)\s*(|k|m|g)i?b?", text.strip().lower())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 16MiB or 8388608")
    return int(found.group(1)) * {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[found.group(2)]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document, no progress bars")
    connection = common.add_argument_group("connection (defaults: environment, then the local stack)")
    connection.add_argument(
        "--upload-addr", metavar="HOST:PORT", help="UploadService [FILESTORE_UPLOAD_ADDR]"
    )
    connection.add_argument(
        "--metadata-addr", metavar="HOST:PORT", help="MetadataService [FILESTORE_METADATA_ADDR]"
    )
    connection.add_argument(
        "--download-addr", metavar="HOST:PORT", help="DownloadService [FILESTORE_DOWNLOAD_ADDR]"
    )
    connection.add_argument("--token", help="bearer token (JWT) [FILESTORE_TOKEN]")
    connection.add_argument("--stack-file", type=Path, help="stack.json of a local stack")
    connection.add_argument("--user", help="development token subject [FILESTORE_USER, default dev]")
    connection.add_argument("--tenant", help="development token tenant [FILESTORE_TENANT, default dev]")
    connection.add_argument(
        "--ca-file", metavar="PEM", help="CA to verify services and storage against [FILESTORE_TLS_CA_FILE]"
    )
    connection.add_argument(
        "--client-cert",
        metavar="PEM",
        help="client certificate for mutual TLS [FILESTORE_TLS_CLIENT_CERT_FILE]",
    )
    connection.add_argument(
        "--client-key", metavar="PEM", help="its private key [FILESTORE_TLS_CLIENT_KEY_FILE]"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Upload, share and download files with Filestore. Bytes go straight to storage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    upload = command(
        "upload",
        "upload a file (resumable)",
        "Upload a file; large files go in parallel parts. Prints the new file's id.\n"
        "Run the same command again after an interruption: only the missing parts are sent.",
    )
    upload.add_argument("path", type=Path, help="the file to upload")
    upload.add_argument("--name", help="display name (default: the file's name)")
    upload.add_argument("--content-type", help="MIME type (default: guessed from the name)")
    upload.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    upload.add_argument("--part-size", type=_size, default=0, help="multipart part size, e.g. 16MiB")
    upload.add_argument("--concurrency", type=int, default=8, help="parts in flight (default 8)")
    upload.add_argument(
        "--part-checksum",
        choices=("crc32", "sha256", "none"),
        default="crc32",
        help="checksum of each part that storage verifies (default crc32)",
    )
    upload.add_argument("--no-resume", action="store_true", help="start over even if a resume state exists")
    upload.add_argument("--wait", action="store_true", help="wait until processing ends (READY or not)")

    download = command(
        "download",
        "download a file (resumable)",
        "Download a READY file. An interrupted download continues where it stopped.",
    )
    download.add_argument("file_id", help="the file id")
    download.add_argument("dest", nargs="?", type=Path, default=Path(), help="file or directory (default .)")

    ls = command("ls", "list your files", "List your files, newest first.")
    ls.add_argument("--prefix", default="", help="only names starting with this")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")

    info = command(
        "info", "show a file and its processing results", "Show a file and its processing results."
    )
    info.add_argument("file_id", help="the file id")

    share = command(
        "share",
        "make a download link, or grant a user access",
        "Without --with: print a short-lived download URL anyone holding it can use.\n"
        "With --with USER: let that user (same tenant) read the file with their own token.",
    )
    share.add_argument("file_id", help="the file id")
    share.add_argument("--with", dest="principal", metavar="USER", help="grant this user access")
    share.add_argument("--write", action="store_true", help="with --with: also allow metadata updates")
    share.add_argument(
        "--expires", type=_duration, help="with --with: grant lifetime, e.g. 7d (default: none)"
    )
    share.add_argument("--ttl", type=_duration, help="URL lifetime, e.g. 10m (default: the service's)")

    rm = command("rm", "delete a file", "Delete a file (its bytes are released).")
    rm.add_argument("file_id", help="the file id")

    stack = commands.add_parser(
        "stack",
        help="run the embedded local stack, or check it",
        description="The embedded stack, exactly as `make run` / `filestore-stack` run it.",
    )
    stack.add_argument("stack_args", nargs=argparse.REMAINDER, metavar="run|status [--json] [--file PATH]")

    fsck = commands.add_parser(
        "fsck",
        help="compare the catalogue with storage (operators)",
        description=(
            "filestore-fsck: report (or, with --repair, fix) objects without records, records "
            "without objects, stale multipart uploads, drifted reference counts and parentless "
            "derivatives.\n\n"
            "It reads the database and storage directly, as an operator. With FILESTORE_DATABASE_URL "
            "or any FILESTORE_S3_* variable set, it uses the environment alone, as filestore-fsck "
            "does; otherwise the local stack's database and S3 keys, from its stack.json.\n\n"
            "exit status: 0 clean (or all repaired), 1 findings remain, 2 could not check"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fsck.add_argument("--repair", action="store_true", help="fix what is found (default: report only)")
    fsck.add_argument("--json", action="store_true", help="print the report as JSON")
    fsck.add_argument(
        "--grace-s",
        type=float,
        metavar="SECONDS",
        help="leave objects and uploads younger than this alone (default: FILESTORE_FSCK_GRACE_S or 3600)",
    )
    fsck.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="TENANT",
        help="check only this tenant (repeatable; default: all)",
    )
    fsck.add_argument("--stack-file", type=Path, help="stack.json of a local stack")
    return parser


def _endpoints(args: argparse.Namespace) -> Endpoints:
    env = os.environ
    upload = args.upload_addr or env.get("FILESTORE_UPLOAD_ADDR", "").strip()
    metadata = args.metadata_addr or env.get("FILESTORE_METADATA_ADDR", "").strip()
    download = args.download_addr or env.get("FILESTORE_DOWNLOAD_ADDR", "").strip()
    token = args.token or env.get("FILESTORE_TOKEN", "").strip()
    tls = client_tls(
        ca_file=args.ca_file or env.get(TLS_ENV_VARS["ca_file"], "").strip() or None,
        client_cert_file=args.client_cert or env.get(TLS_ENV_VARS["client_cert_file"], "").strip() or None,
        client_key_file=args.client_key or env.get(TLS_ENV_VARS["client_key_file"], "").strip() or None,
    )
    if upload and metadata and download and token:
        return Endpoints(upload=upload, metadata=metadata, download=download, token=token, tls=tls)
    try:
        stack = Endpoints.from_stack_json(
            args.stack_file or default_stack_json(),
            subject=args.user or env.get("FILESTORE_USER", "").strip() or "dev",
            tenant=args.tenant or env.get("FILESTORE_TENANT", "").strip() or "dev",
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc}\n  start one with `filestore stack run` (or `make run`), or set "
            "FILESTORE_UPLOAD_ADDR, FILESTORE_METADATA_ADDR, FILESTORE_DOWNLOAD_ADDR and FILESTORE_TOKEN"
        ) from None
    return Endpoints(
        upload=upload or stack.upload,
        metadata=metadata or stack.metadata,
        download=download or stack.download,
        token=token or stack.token,
        tls=tls or stack.tls,
    )


def _to_json(message: Message) -> dict[str, Any]:
    # Every field, zeros and empty strings included: a script reads "size": "0" for an empty file
    # rather than finding the key missing.
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _status(file: resources_pb2.File) -> str:
    return resources_pb2.FileStatus.Name(file.status).removeprefix("FILE_STATUS_")


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


class _Output:
    """Where results go: plain lines or one JSON document on stdout; progress and errors on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, document: dict[str, Any], lines: Sequence[str]) -> None:
        if self.as_json:
            print(json.dumps(document, indent=2, sort_keys=True))
        else:
            for line in lines:
                print(line)

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Callable[[Progress], None]]:
        """A bar with rate and ETA on a terminal; nothing when scripted (--json or not a tty)."""
        bar = ProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.errors,
            transient=False,
            disable=self.as_json or not self.errors.is_terminal,
        )
        with bar:
            task = bar.add_task(label, total=total)

            def update(progress: Progress) -> None:
                bar.update(task, completed=progress.bytes_done)
                if progress.event is TransferEvent.RESUMED:
                    bar.console.print(f"{PROG}: resuming: {progress.detail}")
                elif progress.event is TransferEvent.RETRYING:
                    bar.console.print(
                        f"{PROG}: retrying in {progress.delay_s:.1f} s ({progress.detail}, "
                        f"attempt {progress.attempt + 1})"
                    )

            yield update

    def error(self, error: FilestoreError | str, code: int) -> int:
        if isinstance(error, FilestoreError):
            line = f"{error.reason}: {error.message}"
            document = {
                "code": error.code.name,
                "reason": error.reason,
                "message": error.message,
                "metadata": error.metadata,
            }
        else:
            line, document = error, {"code": "USAGE" if code == EXIT_USAGE else "ERROR", "message": error}
        if self.as_json:
            print(json.dumps({"error": document}, indent=2, sort_keys=True))
        # One line for people (the configuration hint may add an indented second one).
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return code


def _file_lines(file: resources_pb2.File) -> list[str]:
    return [
        f"id            {file.id}",
        f"name          {file.name}",
        f"size          {file.size} ({_human_size(file.size)})",
        f"type          {file.sniffed_content_type or file.declared_content_type}",
        f"status        {_status(file)}" + (f" ({file.status_reason})" if file.status_reason else ""),
        f"sha256        {file.sha256}",
        f"created       {file.create_time.ToJsonString()}",
    ]


def _run_upload(client: Client, args: argparse.Namespace, out: _Output) -> int:
    path: Path = args.path
    if not path.is_file():
        return out.error(f"{path}: no such file", EXIT_USAGE)
    with out.progress(f"upload {path.name}", path.stat().st_size) as update:
        result = client.upload(
            path,
            name=args.name,
            content_type=args.content_type,
            labels=dict(args.label),
            progress=update,
            resume=not args.no_resume,
        )
    file = result.file
    if args.wait:
        file = client.wait_until_processed(file.id)
    out.result(
        {
            "file": _to_json(file),
            "upload_id": result.upload_id,
            "kind": result.kind,
            "parts_sent": result.parts_sent,
            "parts_resumed": result.parts_resumed,
            "bytes_sent": result.bytes_sent,
        },
        [file.id] if not sys.stdout.isatty() else [f"{file.id}  {file.name}  {_status(file)}"],
    )
    return EXIT_OK if _status(file) not in ("QUARANTINED", "FAILED") else EXIT_REFUSED


def _run_download(client: Client, args: argparse.Namespace, out: _Output) -> int:
    file = client.get_file(args.file_id)
    with out.progress(f"download {file.name}", file.size) as update:
        result = client.download(args.file_id, args.dest, progress=update)
    out.result(
        {"file": _to_json(result.file), "path": str(result.path), "resumed_from": result.resumed_from},
        [str(result.path)],
    )
    return EXIT_OK


def _run_ls(client: Client, args: argparse.Namespace, out: _Output) -> int:
    files: list[resources_pb2.File] = []
    token = ""
    while True:
        want = 1000 if args.limit <= 0 else min(1000, args.limit - len(files))
        page, token = client.list_files_page(page_size=want, page_token=token, name_prefix=args.prefix)
        files.extend(page)
        if not token or (args.limit > 0 and len(files) >= args.limit):
            break
    out.result(
        {"files": [_to_json(f) for f in files], "more": bool(token)},
        [f"{f.id}  {_status(f):<11} {_human_size(f.size):>10}  {f.name}" for f in files],
    )
    return EXIT_OK


def _run_info(client: Client, args: argparse.Namespace, out: _Output) -> int:
    info: FileInfo = client.file_info(args.file_id)
    lines = _file_lines(info.file)
    for result in info.results:
        outcome = resources_pb2.StepOutcome.Name(result.outcome).removeprefix("STEP_OUTCOME_")
        details = ", ".join(f"{k}={v}" for k, v in sorted(result.details.items()))
        lines.append(f"step          {result.step}: {outcome}" + (f" ({details})" if details else ""))
    lines.extend(f"derivative    {d.kind} ({d.content_type}, {d.size} B)" for d in info.derivatives)
    tier = f"{info.file.store or 'default'}/{info.file.storage_class or 'STANDARD'}"
    flags = [
        flag for flag, on in (("archived", info.file.archived), ("legal hold", info.file.legal_hold)) if on
    ]
    lines.append(f"tier          {tier}" + (f" ({', '.join(flags)})" if flags else ""))
    for action in info.lifecycle:
        kind = metadata_service_pb2.LifecycleActionKind.Name(action.kind).removeprefix(
            "LIFECYCLE_ACTION_KIND_"
        )
        state = metadata_service_pb2.LifecycleActionState.Name(action.state).removeprefix(
            "LIFECYCLE_ACTION_STATE_"
        )
        moved = (
            f" -> {action.target_store}/{action.target_storage_class}"
            if kind in ("TRANSITION", "RESTORE")
            else ""
        )
        rule = f" rule {action.rule_id}" if action.rule_id else ""
        when = action.done_time.ToJsonString() if action.HasField("done_time") else "in progress"
        lines.append(f"lifecycle     {kind}{moved} {state}{rule} ({when})")
    out.result(
        {
            "file": _to_json(info.file),
            "processing": [_to_json(r) for r in info.results],
            "derivatives": [_to_json(d) for d in info.derivatives],
            "lifecycle": [_to_json(a) for a in info.lifecycle],
        },
        lines,
    )
    return EXIT_OK


def _run_share(client: Client, args: argparse.Namespace, out: _Output) -> int:
    ttl_s = int(args.ttl.total_seconds()) if args.ttl else 0
    if args.principal:
        permission = resources_pb2.PERMISSION_WRITE if args.write else resources_pb2.PERMISSION_READ
        grant = client.share(args.file_id, args.principal, permission=permission, expires_in=args.expires)
        out.result(
            {"grant": _to_json(grant)},
            [f"{args.principal} may now read {args.file_id} (grant {grant.id})"],
        )
        return EXIT_OK
    if args.write or args.expires:
        return out.error("--write and --expires apply to a grant: add --with USER", EXIT_USAGE)
    url = client.download_url(args.file_id, ttl_s=ttl_s)
    out.result({"download_url": _to_json(url)}, [url.url])
    return EXIT_OK


def _run_rm(client: Client, args: argparse.Namespace, out: _Output) -> int:
    file = client.delete_file(args.file_id)
    out.result({"file": _to_json(file)}, [f"deleted {file.id}"])
    return EXIT_OK


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace, _Output], int]] = {
    "upload": _run_upload,
    "download": _run_download,
    "ls": _run_ls,
    "info": _run_info,
    "share": _run_share,
    "rm": _run_rm,
}


def _run_stack(arguments: Sequence[str]) -> int:
    try:
        from filestore.stack.__main__ import main as stack_main
    except ImportError:  # pragma: no cover - depends on how the SDK was installed
        print(f"{PROG}: error: needs the stack extra: pip install 'filestore-client[stack]'", file=sys.stderr)
        return EXIT_USAGE
    return stack_main(list(arguments) or ["--help"])


#: What the reconciler is configured by; any of them set means "a deployment, not the local stack".
_FSCK_CONFIG_PREFIXES = ("FILESTORE_DATABASE_URL", "FILESTORE_S3_")


def _fsck_environment(stack_file: Path | None) -> dict[str, str]:
    """The reconciler's configuration: the environment when it names a database or storage (never
    mixed with the local stack's, as one deployment's records against another's storage would make
    every object an orphan), else the local stack's database and operator S3 keys."""
    env = dict(os.environ)
    if any(name.startswith(_FSCK_CONFIG_PREFIXES) for name, value in env.items() if value.strip()):
        return env
    try:
        from filestore.stack import StackConfigError, load_stack_json
    except ImportError:  # pragma: no cover - depends on how the SDK was installed
        raise ConfigurationError(
            "set FILESTORE_DATABASE_URL and FILESTORE_S3_*, or install the stack extra to use the local "
            "stack: pip install 'filestore-client[stack]'"
        ) from None
    path = stack_file or default_stack_json()
    try:
        stack = load_stack_json(path).endpoints
    except StackConfigError as exc:
        raise ConfigurationError(
            f"{exc}\n  start one with `filestore stack run` (or `make run`), or set FILESTORE_DATABASE_URL, "
            "FILESTORE_S3_ENDPOINT, FILESTORE_S3_ACCESS_KEY and FILESTORE_S3_SECRET_KEY"
        ) from None
    # The identity stack.json names is the operator's (full rights on the bucket); the services'
    # own keys could not list, or delete, what the reconciler must.
    env.update(
        FILESTORE_DATABASE_URL=stack.database_url,
        FILESTORE_S3_ENDPOINT=stack.s3_endpoint,
        FILESTORE_S3_REGION=stack.s3_region,
        FILESTORE_S3_BUCKET=stack.bucket,
        FILESTORE_S3_ACCESS_KEY=stack.s3_access_key,
        FILESTORE_S3_SECRET_KEY=stack.s3_secret_key,
    )
    if stack.tls is not None and stack.tls.ca_file is not None:
        # A TLS stack's storage answers HTTPS with a certificate from the stack's CA.
        env["FILESTORE_S3_CA_FILE"] = stack.tls.ca_file
    return env


def _run_fsck(args: argparse.Namespace) -> int:
    try:
        from filestore.metadata.fsck import main as fsck_main
    except ImportError:  # pragma: no cover - depends on how the SDK was installed
        print(
            f"{PROG}: error: fsck needs the ops extra: pip install 'filestore-client[ops]'", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        environ = _fsck_environment(args.stack_file)
    except ConfigurationError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    argv = [*(["--repair"] if args.repair else []), *(["--json"] if args.json else [])]
    if args.grace_s is not None:
        argv += ["--grace-s", repr(args.grace_s)]
    for tenant in args.tenant:
        argv += ["--tenant", tenant]
    return fsck_main(argv, environ=environ)


def _exit_code(error: FilestoreError) -> int:
    return EXIT_UNAVAILABLE if is_retryable_error(error) else EXIT_REFUSED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stack":
        return _run_stack(args.stack_args)
    if args.command == "fsck":
        return _run_fsck(args)
    out = _Output(args.json)
    try:
        endpoints = _endpoints(args)
    except ConfigurationError as exc:
        return out.error(str(exc), EXIT_USAGE)
    part_size = getattr(args, "part_size", 0)
    try:
        options = TransferOptions(
            part_size=part_size,
            # Asking for a part size means "send in parts": anything larger than one part goes multipart.
            multipart_threshold=part_size or TransferOptions.multipart_threshold,
            concurrency=getattr(args, "concurrency", 8),
            part_checksum=getattr(args, "part_checksum", "crc32"),
        )
    except ValueError as exc:
        return out.error(str(exc), EXIT_USAGE)
    try:
        with Client(endpoints, options=options) as client:
            return _COMMANDS[args.command](client, args, out)
    except KeyboardInterrupt:
        hint = "; run the same command again to resume" if args.command in ("upload", "download") else ""
        return out.error(f"interrupted{hint}", EXIT_INTERRUPTED)
    except FilestoreError as exc:
        return out.error(exc, _exit_code(exc))
    except OSError as exc:
        return out.error(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
