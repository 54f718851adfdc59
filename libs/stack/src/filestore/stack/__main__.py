"""``filestore-stack``: run the embedded stack in the foreground, or report on a running one.

While ``run`` runs, a component that exits is restarted with backoff (one line on stderr says which,
how it ended and where its log is); one that keeps crashing ends the stack (see
:mod:`filestore.stack.supervisor`).

Exit status: 0 ok, 1 failure (a component kept crashing, did not get ready, or is unhealthy), 2
configuration error (including a port already in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from filestore.stack.config import StackConfig
from filestore.stack.endpoints import StackInfo, check_health, load_stack_json
from filestore.stack.errors import StackConfigError, StackCrashLoopError, StackError
from filestore.stack.process import pid_alive
from filestore.stack.stack import Stack
from filestore.stack.supervisor import supervise
from filestore.stack.tls import ensure_stack_tls, write_nats_tls_config

__all__ = ["main", "run_in_foreground"]

PROG = "filestore-stack"
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _mask_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _describe(info: StackInfo, stack_json: Path) -> str:
    e = info.endpoints
    # The stack allows the demo page's origin itself, beside those of the environment.
    origins = (
        "the demo page, FILESTORE_CORS_ORIGINS" if "demo" in info.components else "FILESTORE_CORS_ORIGINS"
    )
    rows = [
        ("S3", f"{e.s3_endpoint}  (bucket {e.bucket}, region {e.s3_region})"),
        ("S3 keys", str(info.s3_credentials_file)),
        ("NATS", f"{','.join(e.nats_urls)}  (monitor {e.nats_monitor_url})"),
        ("filer gRPC", e.filer_grpc),
        ("database", _mask_password(e.database_url)),
        ("auth secret", str(info.auth_secret_file)),
        *(
            (
                s,
                f"{e.service_addr(s)}  (metrics {e.metrics_urls[s]})"
                if s in e.metrics_urls
                else e.service_addr(s),
            )
            for s in ("metadata", "upload", "processor", "download")
            if s in info.components or e.replicas(s)
        ),
        *(
            [("browser", f"{e.edge_url}  (Connect and gRPC-Web; origins: {origins})")]
            if "edge" in info.components
            else []
        ),
        *(
            [("demo page", f"{e.demo_url}  (open it in a browser: upload as the development user)")]
            if "demo" in info.components
            else []
        ),
        *(
            [("TLS", f"CA {e.tls.ca_file}, client certificate {e.tls.client_cert_file} (mutual TLS)")]
            if e.tls is not None
            else []
        ),
        ("stack.json", str(stack_json)),
        ("logs", str(info.logs_dir)),
    ]
    return "\n".join(f"  {name:<12}{value}" for name, value in rows)


async def run_in_foreground(config: StackConfig, *, profile: str = "single") -> int:
    """``filestore-stack run``: start, supervise until SIGINT or SIGTERM, stop; the exit status.

    ``profile`` ``cluster`` runs :class:`filestore.stack.cluster.ClusterStack` (replicas of every
    role, ``FILESTORE_STACK_REPLICAS`` of each service) instead of one process per component."""
    try:
        stack = _stack_of(config, profile)
    except StackConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_CONFIG
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)

    starting = asyncio.create_task(stack.start())
    waiting = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        _say("interrupted during start-up; stopping")
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StackError):
            await starting
        return EXIT_OK
    waiting.cancel()
    try:
        starting.result()
    except StackConfigError as exc:
        _say(str(exc))
        return EXIT_CONFIG
    except StackError as exc:
        _say(str(exc))
        return EXIT_FAILURE

    status = EXIT_OK
    supervising: asyncio.Task[None] | None = None
    try:
        stack_json = stack.write_stack_json()
        print(f"{PROG}: ready\n{_describe(stack.info(), stack_json)}", flush=True)
        _say("running; Ctrl-C or SIGTERM stops everything")
        # A restarted component has a new pid: stack.json follows, so `status` checks the live one.
        supervising = asyncio.create_task(
            supervise(stack, say=_say, restarted=lambda _: stack.write_stack_json(stack_json))
        )
        waiting = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({supervising, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if supervising.done():
            try:
                supervising.result()
            except StackCrashLoopError as exc:
                _say(str(exc))
                status = EXIT_FAILURE
    finally:
        if supervising is not None and not supervising.done():
            # Before anything stops: a component stopped below must not look like a crash.
            supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervising
        _say("stopping")
        stack.paths.stack_json.unlink(missing_ok=True)
        await stack.stop()
        _say("stopped")
    return status


def _stack_of(config: StackConfig, profile: str) -> Stack:
    if profile == "single":
        return Stack(config)
    from filestore.stack.cluster import ClusterShape, ClusterStack

    raw = os.environ.get("FILESTORE_STACK_REPLICAS", "").strip() or "2"
    if not raw.isdigit():
        raise StackConfigError(f"FILESTORE_STACK_REPLICAS={raw!r} is not a number")
    if not os.environ.get("FILESTORE_STACK_TLS", "").strip():
        # The production shape runs on TLS unless told otherwise (FILESTORE_STACK_TLS=0).
        config = replace(config, tls=True)
    return ClusterStack(config, shape=ClusterShape(replicas=int(raw)))


async def _status(stack_json: Path, *, as_json: bool) -> int:
    try:
        info = load_stack_json(stack_json)
    except StackConfigError as exc:
        _say(str(exc))
        return EXIT_FAILURE
    health = await check_health(info.endpoints, info.components)
    report: dict[str, dict[str, object]] = {}
    for name in info.components:
        pid = info.pids.get(name)
        alive = pid is not None and pid_alive(pid)
        ok, detail = health[name]
        report[name] = {"pid": pid, "alive": alive, "healthy": ok and alive, "detail": detail}
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for name, row in report.items():
            state = "ok" if row["healthy"] else ("UNHEALTHY" if row["alive"] else "DOWN")
            print(f"{name:<12} pid {row['pid']!s:<8} {state:<10} {row['detail']}")
    return EXIT_OK if all(row["healthy"] for row in report.values()) else EXIT_FAILURE


def _issue_certificates(directory: Path, hosts: str, server_names: Sequence[str]) -> int:
    """``certs``: the CA in ``directory`` (made when missing) and every certificate of a TLS stack,
    issued where missing or no longer good, and nats-server's TLS settings beside them; a container
    stack runs it once before anything that mounts the directory (docker-compose.yml)."""
    names: dict[str, list[str]] = {}
    for entry in server_names:
        component, _, listed = entry.partition("=")
        if not listed:
            _say(f"--server {entry!r} is not COMPONENT=NAME[,NAME...]")
            return EXIT_CONFIG
        names.setdefault(component.strip(), []).extend(n for n in listed.split(",") if n.strip())
    try:
        issued = ensure_stack_tls(
            directory, hosts=[h for h in hosts.split(",") if h.strip()], server_names=names
        )
    except StackConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_CONFIG
    write_nats_tls_config(issued)
    _say(f"certificates in {directory}: {len(issued.servers)} servers, {len(issued.clients)} clients")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Run the embedded Filestore stack.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start everything, wait until SERVING, run until Ctrl-C/SIGTERM")
    run.add_argument(
        "--profile",
        choices=("single", "cluster"),
        default="single",
        help="single: one process per component (default); cluster: a NATS cluster, SeaweedFS in its "
        "roles, FILESTORE_STACK_REPLICAS (2) replicas of every service, on PostgreSQL",
    )
    status = commands.add_parser("status", help="report the health of the stack described by stack.json")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--file", type=Path, help="stack.json to read (default $FILESTORE_HOME/stack.json)")
    certs = commands.add_parser(
        "certs",
        help="issue a TLS stack's CA and certificates into a directory (kept while still good)",
    )
    certs.add_argument("--dir", type=Path, required=True, help="where the CA and certificates live")
    certs.add_argument("--hosts", default="", help="names every server certificate carries (comma separated)")
    certs.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="COMPONENT=NAME[,NAME...]",
        help="names one server's certificate carries (metadata, upload, processor, download, edge, "
        "nats, s3); repeat per server. 127.0.0.1 and localhost are always there",
    )
    args = parser.parse_args(argv)

    if args.command == "certs":
        return _issue_certificates(args.dir, args.hosts, args.server)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        config = StackConfig.from_env()
    except StackConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_CONFIG
    if args.command == "run":
        return asyncio.run(run_in_foreground(config, profile=args.profile))
    return asyncio.run(_status(args.file or config.paths.stack_json, as_json=args.json))


if __name__ == "__main__":
    sys.exit(main())
