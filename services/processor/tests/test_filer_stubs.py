"""The checked-in SeaweedFS filer stubs match a fresh build from proto/seaweedfs/filer.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gen_filer_stubs.py"


def test_filer_stubs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_wire_names_are_seaweedfs_own() -> None:
    # The filer routes by `/filer_pb.SeaweedFiler/<method>`; a renamed package would be UNIMPLEMENTED.
    from filestore.processor.bridge._filer import filer_pb2

    service = filer_pb2.DESCRIPTOR.services_by_name["SeaweedFiler"]
    assert service.full_name == "filer_pb.SeaweedFiler"
    fields = filer_pb2.SubscribeMetadataRequest.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in ("client_name", "path_prefix", "since_ns")} == {
        "client_name": 1,
        "path_prefix": 2,
        "since_ns": 3,
    }
