"""Generate the Python code and type stubs for protos/ into libs/protos (the one generated package).

    python scripts/protogen.py          # write libs/protos/src/filestore/v1/*_pb2*.py(i)
    python scripts/protogen.py --check  # exit 1 when the checked-in code differs from a fresh build

Generated files are never edited by hand; `make proto` runs this script.
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

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("filestore") / "v1"
OUTPUT_ROOT = ROOT / "libs" / "protos" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def checked_in() -> list[Path]:
    target = OUTPUT_ROOT / PACKAGE_DIR
    return sorted(p for p in target.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the generated code is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("generated code is stale, run `make proto`: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    target = OUTPUT_ROOT / PACKAGE_DIR
    for old in checked_in():
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy2(path, target / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
