"""Generate Python code and type stubs from the protos; the one generator of the workspace.

    python scripts/protogen.py          # write every target
    python scripts/protogen.py --check  # exit 1 when checked-in code differs from a fresh build

Targets: our own API (`protos/filestore/v1` → `libs/protos/src/filestore/v1`), and the subset of
SeaweedFS's filer API the storage-event bridge calls (`services/processor/proto/seaweedfs/filer.proto`,
kept in SeaweedFS's own package so the wire names match, its generated imports rewritten to the
package it is checked into). Generated files are never edited by hand; `make proto` runs this script.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


@dataclass(frozen=True)
class Target:
    """One set of protos and the package its generated code is checked into."""

    name: str
    proto_root: Path
    #: Directory of the protos, relative to ``proto_root``; protoc writes the modules there too.
    package_dir: Path
    output_dir: Path
    #: (old, new) text replacements for generated imports, when the checked-in package differs
    #: from the proto package's path.
    import_rewrites: tuple[tuple[str, str], ...] = ()


_FILER_PACKAGE = "filestore.processor.bridge._filer"
TARGETS = (
    Target(
        name="filestore.v1",
        proto_root=ROOT / "protos",
        package_dir=Path("filestore") / "v1",
        output_dir=ROOT / "libs" / "protos" / "src" / "filestore" / "v1",
    ),
    Target(
        name="SeaweedFS filer (bridge subset)",
        proto_root=ROOT / "services" / "processor" / "proto",
        package_dir=Path("seaweedfs"),
        output_dir=ROOT / "services" / "processor" / "src" / "filestore" / "processor" / "bridge" / "_filer",
        import_rewrites=(
            ("from seaweedfs import filer_pb2", f"from {_FILER_PACKAGE} import filer_pb2"),
            ("import seaweedfs.filer_pb2", f"import {_FILER_PACKAGE}.filer_pb2"),
            ("seaweedfs.filer_pb2", f"{_FILER_PACKAGE}.filer_pb2"),
        ),
    ),
)


def generate(target: Target, out_dir: Path) -> list[Path]:
    """Generate ``target`` into ``out_dir`` (flat) and return the generated files."""
    protos = sorted((target.proto_root / target.package_dir).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    raw = out_dir / "raw"
    raw.mkdir()
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{target.proto_root}",
        f"-I{well_known}",
        f"--python_out={raw}",
        f"--grpc_python_out={raw}",
        f"--mypy_out={raw}",
        f"--mypy_grpc_out={raw}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {target.name}")
    generated = []
    for path in sorted((raw / target.package_dir).iterdir()):
        if not path.name.endswith(GENERATED_SUFFIXES):
            continue
        text = path.read_text(encoding="utf-8")
        for old, new in target.import_rewrites:
            text = text.replace(old, new)
        written = out_dir / path.name
        written.write_text(text, encoding="utf-8")
        generated.append(written)
    return generated


def checked_in(target: Target) -> list[Path]:
    return sorted(p for p in target.output_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files(target: Target) -> list[str]:
    """Generated files of ``target`` that differ from, or are missing in, the checked-in package."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(target, Path(tmp))}
        current = {p.name: p for p in checked_in(target)}
        return [
            name
            for name in sorted(fresh.keys() | current.keys())
            if name not in fresh or name not in current or not filecmp.cmp(fresh[name], current[name], False)
        ]


def write(target: Target) -> None:
    target.output_dir.mkdir(parents=True, exist_ok=True)
    for old in checked_in(target):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(target, Path(tmp)):
            shutil.copy2(path, target.output_dir / path.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the generated code is stale")
    args = parser.parse_args()
    if not args.check:
        for target in TARGETS:
            write(target)
        return 0
    failed = False
    for target in TARGETS:
        stale = stale_files(target)
        if stale:
            failed = True
            print(
                f"generated code of {target.name} is stale, run `make proto`: {', '.join(stale)}",
                file=sys.stderr,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
