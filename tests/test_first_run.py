"""The newcomer's first minute: `make run` on a machine without ClamAV, tesseract or ffmpeg (not root, or
offline, so the Debian packages could not be installed) still brings the stack up, says in one line per
missing tool what that means, and takes uploads to READY: unscanned, with the scan step (and OCR, and a
video's thumbnail) SKIPPED `TOOL_MISSING` on each file's record. And with clamd but without a ClamAV
database, the stack says that clamd knows only the test signatures, and a database copied into its
directory (as the README says) is used."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from PIL import Image, ImageDraw

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.processor.scanner import ClamdScanner
from filestore.stack import Stack, StackConfig, StackInfo, StackPorts, load_stack_json, port_env_var
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2_grpc,
)
from tests.conftest import Client, StatusEvents
from tests.support import connect_nats, upload_until_processed, wait_for_path

REPO = Path(__file__).resolve().parents[1]
STACK = str(Path(sys.executable).with_name("filestore-stack"))
START_TIMEOUT_S = 90.0
Status = resources_pb2.FileStatus
Outcome = resources_pb2.StepOutcome
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# What `make run` installs (the Makefile's RUN_APT_PACKAGES), and must not stop for.
RUN_PACKAGES = ("libmagic1", "clamav", "clamav-daemon", "tesseract-ocr", "tesseract-ocr-eng", "ffmpeg")


# ------------------------------------------------------------------------------------ the Makefile

#: make's own variables, which a make inside `make test` would inherit: with MAKELEVEL set, `make -n`
#: prints "Entering directory" lines among the commands it would run.
_PARENT_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def _make_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in _PARENT_MAKE}


def test_make_run_installs_the_stack_packages_before_it_starts_the_stack() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "run"],
        cwd=REPO,
        env=_make_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    [install] = [line for line in dry_run if "apt-get install" in line]
    # Like `make test`: apt-get update first, and RUNLEVEL=1 so no package starts a system daemon.
    assert "apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install" in install
    # Every package the stack uses, and not the tests' CDN edge (nginx).
    assert f"for p in {' '.join(RUN_PACKAGES)}; do" in install
    [start] = [n for n, line in enumerate(dry_run) if line.endswith("filestore-stack run")]
    assert dry_run.index(install) < start


def test_make_run_on_a_debian_without_python3_venv_installs_it_to_bootstrap_uv(tmp_path: Path) -> None:
    shutil.copyfile(REPO / "Makefile", tmp_path / "Makefile")
    dry_run = subprocess.run(
        ["make", "-n", ".tools/bin/uv"],
        cwd=tmp_path,
        env=_make_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert dry_run[0].startswith('python3 -m venv .tools || { missing=""; for p in python3-venv; do')
    assert dry_run[0].endswith("fi && python3 -m venv .tools; }")


def _make_as_a_user(target: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``make -s target`` as a user who is not root, from a copy of the Makefile nobody else needs."""
    as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="filestore-make-") as scratch:
        os.chmod(scratch, 0o755)
        makefile = Path(scratch, "Makefile")
        shutil.copyfile(REPO / "Makefile", makefile)
        makefile.chmod(0o644)
        assignments = [f"{name}={value}" for name, value in variables.items()]
        return subprocess.run(
            [*as_user, "make", "-s", "-f", str(makefile), target, *assignments],
            cwd=scratch,
            env=_make_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def test_make_run_names_what_it_could_not_install_in_one_line_and_goes_on() -> None:
    result = _make_as_a_user("run-deps", RUN_APT_PACKAGES="filestore-no-such-package")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        "could not install the Debian packages filestore-no-such-package (not root, or offline): the stack "
        "starts without what it does not find, and says what that means"
    ]


def test_make_test_still_stops_for_a_package_it_could_not_install() -> None:
    result = _make_as_a_user("system-deps", APT_PACKAGES="filestore-no-such-package")
    assert result.returncode != 0
    assert result.stdout.splitlines() == [
        "missing Debian packages: filestore-no-such-package (install them, or run as root)"
    ]


# ---------------------------------------------------------------------- the stack without the tools


@dataclass(frozen=True)
class RunningStack:
    info: StackInfo
    stderr: list[str]


@pytest.fixture(scope="module")
def stack_without_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """`filestore-stack run` as `make run` starts it, where clamd, tesseract and ffmpeg are not to be
    found: clamd is named by a path that does not exist (the stack also looks in the sbin directories,
    where a PATH cannot hide it), and the PATH holds no tesseract or ffmpeg. Every step gates READY,
    so READY means that each step has its outcome."""
    root = tmp_path_factory.mktemp("first-run")
    tools = root / "bin"
    tools.mkdir()
    for kept in ("setpriv", "nice"):  # what the stack and the processor use from PATH otherwise
        if (found := shutil.which(kept)) is not None:
            (tools / kept).symlink_to(found)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILESTORE_")}
    env.update(
        PATH=str(tools),
        FILESTORE_HOME=str(root / "home"),
        FILESTORE_STACK_CLAMD=str(root / "no-clamd-here" / "clamd"),
        FILESTORE_PIPELINE_REQUIRED="integrity,sniff,scan,thumbnail,ocr",
    )
    for name, port in StackPorts.free().items():
        if name != "admin_grpc":  # derived from the admin port
            env[port_env_var(name)] = str(port)
    stderr_path = root / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([STACK, "run"], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    stack_json = root / "home" / "stack.json"
    try:
        wait_for_path(stack_json, process, timeout_s=START_TIMEOUT_S, output=stderr_path.read_text)
        yield RunningStack(info=load_stack_json(stack_json), stderr=stderr_path.read_text().splitlines())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, stderr_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_stack_comes_up_without_them_and_says_so_once_each(stack_without_tools: RunningStack) -> None:
    info, said = stack_without_tools.info, stack_without_tools.stderr
    assert info.components == (
        "seaweedfs", "nats", "metadata", "upload", "processor", "download", "edge", "demo"
    )  # fmt: skip
    missing_clamd = str(info.home.parent / "no-clamd-here" / "clamd")
    expected = [
        f"filestore-stack: {missing_clamd} not found (install Debian clamav-daemon, or set "
        "FILESTORE_STACK_CLAMD): starting without it, so files are NOT virus-scanned: their scan step "
        "ends SKIPPED TOOL_MISSING and they become READY (ReprocessFile scans them once clamd runs)",
        "filestore-stack: tesseract not found (install Debian tesseract-ocr tesseract-ocr-eng): no OCR: "
        "the ocr step ends SKIPPED TOOL_MISSING",
        "filestore-stack: ffmpeg not found (install Debian ffmpeg): no video thumbnails: their thumbnail "
        "step ends SKIPPED TOOL_MISSING",
    ]
    for line in expected:
        assert said.count(line) == 1, said
    assert not [line for line in said if "Traceback" in line or "error" in line.lower()], said


@pytest.fixture
async def user(stack_without_tools: RunningStack) -> AsyncIterator[tuple[Client, StatusEvents]]:
    endpoints = stack_without_tools.info.endpoints
    token = mint_token(endpoints.auth_secret, subject="newcomer", tenant="first-run")
    channels: list[grpc.aio.Channel] = []

    def channel(address: str) -> grpc.aio.Channel:
        channels.append(insecure_channel(address, token=lambda: token))
        return channels[-1]

    client = Client(
        subject="newcomer",
        tenant="first-run",
        upload=upload_service_pb2_grpc.UploadServiceStub(channel(endpoints.upload_addr)),
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel(endpoints.metadata_addr)),
        processor=processor_service_pb2_grpc.ProcessorServiceStub(channel(endpoints.processor_addr)),
        download=download_service_pb2_grpc.DownloadServiceStub(channel(endpoints.download_addr)),
    )
    events = StatusEvents()
    connection = await connect_nats(endpoints)
    await connection.subscribe("files.file.ready", cb=events.on_message)
    await connection.flush()
    yield client, events
    await connection.close()
    for opened in channels:
        await opened.close()


async def _steps(client: Client, file_id: str) -> dict[str, resources_pb2.ProcessingResult]:
    status = await client.processor.GetProcessingStatus(
        processor_service_pb2.GetProcessingStatusRequest(file_id=file_id)
    )
    return {result.step: result for result in status.results}


async def test_an_upload_becomes_ready_unscanned_and_its_record_says_so(
    user: tuple[Client, StatusEvents],
) -> None:
    client, events = user
    # The EICAR test string, which clamd would quarantine: nothing looked at it.
    file = await upload_until_processed(
        client, events, b"a note\n" + EICAR + b"\n", name="note.txt", content_type="text/plain"
    )
    assert file.status == Status.FILE_STATUS_READY
    steps = await _steps(client, file.id)
    assert steps["integrity"].outcome == steps["sniff"].outcome == Outcome.STEP_OUTCOME_PASSED
    assert steps["scan"].outcome == Outcome.STEP_OUTCOME_SKIPPED
    assert steps["scan"].details["reason"] == "TOOL_MISSING"
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    assert url.url


async def test_without_tesseract_and_ffmpeg_their_steps_are_skipped_tool_missing(
    user: tuple[Client, StatusEvents], tmp_path: Path
) -> None:
    client, events = user
    ffmpeg = shutil.which("ffmpeg")  # the test's own PATH has it; the stack's has not
    assert ffmpeg is not None, "make test installs ffmpeg"
    video = tmp_path / "clip.mp4"
    made = await asyncio.create_subprocess_exec(
        ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=160x120:rate=10",
        "-pix_fmt", "yuv420p", str(video),
    )  # fmt: skip
    assert await made.wait() == 0
    clip = await upload_until_processed(
        client, events, video.read_bytes(), name="clip.mp4", content_type="video/mp4"
    )
    assert clip.status == Status.FILE_STATUS_READY
    thumbnail = (await _steps(client, clip.id))["thumbnail"]
    assert (thumbnail.outcome, thumbnail.details["reason"]) == (Outcome.STEP_OUTCOME_SKIPPED, "TOOL_MISSING")
    assert "ffmpeg" in thumbnail.details["detail"]

    png = _png_of_text()
    picture = await upload_until_processed(client, events, png, name="words.png", content_type="image/png")
    assert picture.status == Status.FILE_STATUS_READY
    steps = await _steps(client, picture.id)
    assert steps["thumbnail"].outcome == Outcome.STEP_OUTCOME_PASSED  # Pillow needs no tool
    assert (steps["ocr"].outcome, steps["ocr"].details["reason"]) == (
        Outcome.STEP_OUTCOME_SKIPPED,
        "TOOL_MISSING",
    )
    assert "tesseract" in steps["ocr"].details["detail"]


def _png_of_text() -> bytes:
    image = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(image).text((20, 40), "first run", fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# ----------------------------------------------------------------------- the signature database

COPIED_SIGNATURE = b"a signature someone copied into the stack's database directory"


def _host_has_a_clamav_database() -> bool:
    """Whether this machine has one where freshclam keeps it (the stack then links it in)."""
    return any(Path("/var/lib/clamav").glob("*.c[vlu]d"))


async def test_a_database_copied_into_the_stack_s_directory_is_used_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = StackConfig(home=tmp_path / "home", ports=StackPorts.free(), components=("clamd",))
    database = config.home / "clamd" / "db"
    host_has_one = _host_has_a_clamav_database()
    only_test_signatures = (
        "clamd knows only the test signatures shipped with the stack (EICAR), no real malware: add a ClamAV "
        f"database with freshclam, or copy main.cvd and daily.cvd into {database} (README: The signature "
        "database)"
    )

    async def scan(body: bytes) -> str:
        async with Stack(config) as stack:
            scanner = ClamdScanner(stack.endpoints.clamd_addr, timeout_s=30, frame_bytes=64 * 1024)
            verdict = await asyncio.to_thread(scanner.scan, [body])
        return verdict.signature

    with caplog.at_level("WARNING", logger="filestore.stack"):
        assert await scan(COPIED_SIGNATURE) == ""
    assert (only_test_signatures in caplog.messages) is not host_has_one

    # ClamAV's extended signature format: name, any file type, any offset, the bytes in hex.
    (database / "local.ndb").write_text(f"Filestore-Copied-Signature:0:*:{COPIED_SIGNATURE.hex()}\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="filestore.stack"):
        assert (await scan(COPIED_SIGNATURE)).startswith("Filestore-Copied-Signature")
    assert only_test_signatures not in caplog.messages
    assert (database / "local.ndb").is_file()  # a start renews the links to the host's, nothing else
