"""buf.gen.yaml, the documented way to generate Go, TypeScript and Java stubs, is a template buf accepts
and runs. The real plugins (protoc-gen-go, ts-proto, grpc-java, protoc) are not installable here, so
stand-ins on PATH record the CodeGeneratorRequest each one is handed; the test checks that every plugin
gets every filestore.v1 file, with its options and the language options managed mode sets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from google.protobuf.compiler import plugin_pb2

REPO = Path(__file__).resolve().parents[1]
BUF = REPO / "node_modules" / ".bin" / "buf"
PLUGINS = ("protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-ts_proto", "protoc-gen-grpc-java")
API_FILES = {
    f"filestore/v1/{name}.proto"
    for name in (
        "resources",
        "error_reason",
        "events",
        "upload_service",
        "metadata_service",
        "processor_service",
        "download_service",
    )
}


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, plugin_pb2.CodeGeneratorRequest]:
    if not BUF.exists():
        pytest.fail("node_modules/.bin/buf is missing: run `make node-deps`")
    root = tmp_path_factory.mktemp("buf-gen")
    bin_dir, seen = root / "bin", root / "seen"
    bin_dir.mkdir()
    seen.mkdir()
    for plugin in PLUGINS:
        # A protoc plugin that answers an empty CodeGeneratorResponse (zero bytes) and keeps the request.
        script = bin_dir / plugin
        script.write_text(f'#!/bin/sh\ncat > "{seen}/{plugin}.bin"\n', encoding="utf-8")
        script.chmod(0o755)
    # protoc, for Java's built-in generator: buf asks its version, then runs it with --java_out.
    protoc = bin_dir / "protoc"
    protoc.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo "libprotoc 29.3"; exit 0; fi\n'
        f'echo "$@" > "{seen}/protoc.args"\ncat > "{seen}/protoc.descriptors"\n',
        encoding="utf-8",
    )
    protoc.chmod(0o755)
    result = subprocess.run(
        [str(BUF), "generate", "--template", "buf.gen.yaml", "-o", str(root / "gen")],
        check=False,
        cwd=REPO,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--java_out=" in (seen / "protoc.args").read_text(encoding="utf-8")
    return {
        plugin: plugin_pb2.CodeGeneratorRequest.FromString((seen / f"{plugin}.bin").read_bytes())
        for plugin in PLUGINS
    }


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_plugin_gets_the_whole_api(
    requests: dict[str, plugin_pb2.CodeGeneratorRequest], plugin: str
) -> None:
    assert set(requests[plugin].file_to_generate) == API_FILES


def test_plugin_options_reach_the_plugins(requests: dict[str, plugin_pb2.CodeGeneratorRequest]) -> None:
    assert requests["protoc-gen-go"].parameter == "paths=source_relative"
    assert requests["protoc-gen-go-grpc"].parameter == "paths=source_relative"
    ts_options = set(requests["protoc-gen-ts_proto"].parameter.split(","))
    assert {"outputServices=grpc-js", "forceLong=string"} <= ts_options


def test_managed_mode_sets_go_and_java_packages(
    requests: dict[str, plugin_pb2.CodeGeneratorRequest],
) -> None:
    go = {f.name: f for f in requests["protoc-gen-go"].proto_file}
    assert go["filestore/v1/upload_service.proto"].options.go_package == (
        "example.com/filestore/gen/go/filestore/v1;filestorev1"
    )
    java = {f.name: f for f in requests["protoc-gen-grpc-java"].proto_file}
    upload = java["filestore/v1/upload_service.proto"].options
    assert upload.java_package == "dev.filestore.filestore.v1"
    assert upload.java_multiple_files
