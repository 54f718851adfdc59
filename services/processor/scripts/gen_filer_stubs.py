"""Generate the Python code and type stubs for SeaweedFS's filer API (the bridge's subset).

    python services/processor/scripts/gen_filer_stubs.py          # write bridge/_filer/filer_pb2*.py(i)
    python services/processor/scripts/gen_filer_stubs.py --check  # exit 1 when the checked-in code is stale

The proto keeps SeaweedFS's package (`filer_pb`) and lives at `proto/seaweedfs/filer.proto`, so protoc
names the modules `seaweedfs.filer_pb2`; the generated imports are rewritten to the package the code is
checked into (`filestore.processor.bridge._filer`). Generated files are never edited by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

SERVICE_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = SERVICE_ROOT / "proto"
PROTO = Path("seaweedfs") / "filer.proto"
OUTPUT_DIR = SERVICE_ROOT / "src" / "filestore" / "processor" / "bridge" / "_filer"
TARGET_PACKAGE = "filestore.processor.bridge._filer"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# protoc's module path for the proto, and how the generated files import it.
IMPORT_REWRITES = (
    ("from seaweedfs import filer_pb2", f"from {TARGET_PACKAGE} import filer_pb2"),
    ("import seaweedfs.filer_pb2", f"import {TARGET_PACKAGE}.filer_pb2"),
    ("seaweedfs.filer_pb2", f"{TARGET_PACKAGE}.filer_pb2"),
)


def generate(out_root: Path) -> list[Path]:
    """Generate into ``out_root`` and return the rewritten files (flat, in ``out_root``)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    # The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    raw = out_root / "raw"
    raw.mkdir()
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={raw}",
        f"--grpc_python_out={raw}",
        f"--mypy_out={raw}",
        f"--mypy_grpc_out={raw}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted((raw / PROTO.parent).iterdir()):
        if not path.name.endswith(GENERATED_SUFFIXES):
            continue
        text = path.read_text(encoding="utf-8")
        for old, new in IMPORT_REWRITES:
            text = text.replace(old, new)
        target = out_root / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def checked_in() -> list[Path]:
    return sorted(p for p in OUTPUT_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files() -> list[str]:
    """Names of generated files that differ from (or are missing in) the checked-in package."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        current = {p.name: p for p in checked_in()}
        names = sorted(fresh.keys() | current.keys())
        return [
            name
            for name in names
            if name not in fresh or name not in current or not filecmp.cmp(fresh[name], current[name], False)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the generated code is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print(
                "SeaweedFS filer stubs are stale, run "
                "`python services/processor/scripts/gen_filer_stubs.py`: " + ", ".join(stale),
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in checked_in():
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy2(path, OUTPUT_DIR / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
