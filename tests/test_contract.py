"""The contract: generated code matches the protos, and every RPC's comment names its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protogen.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_rpc_documents_its_errors() -> None:
    undocumented = []
    for proto in sorted((ROOT / "protos" / "filestore" / "v1").glob("*_service.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("rpc "):
                comment = []
                for previous in reversed(lines[:number]):
                    if not previous.strip().startswith("//"):
                        break
                    comment.append(previous)
                text = " ".join(comment)
                if "Errors" not in text:
                    undocumented.append(f"{proto.name}: {line.strip()}")
    assert undocumented == []
