"""``make k8s-check``: render the Kubernetes overlays (deploy/kubernetes) and validate every object.

Rendering is ``kubectl kustomize`` (kubectl from PATH; Debian's ``kubernetes-client`` where there is
none). The production overlay reads its secrets from files that are never committed, so it is rendered
from a scratch copy of deploy/kubernetes with throwaway files in their place (the same names, values
that mean nothing). Validation is offline: Kubernetes' own kinds against the schemas bundled with
``kubernetes-validate`` (strict: an unknown field fails), KEDA's ScaledObject, which those schemas do
not cover, against ``deploy/kubernetes/schemas/``; any other kind fails. tests/test_kubernetes.py
renders through the same functions and checks the objects against the services' settings.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = [
    "KUBERNETES_VERSION",
    "OVERLAYS",
    "PRODUCTION_SECRET_FILES",
    "kubectl",
    "render",
    "render_directory",
    "validate",
]

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production")
#: The oldest Kubernetes these manifests target: grpc probes are GA from 1.27, the rest older.
KUBERNETES_VERSION = "1.30.0"
#: Custom resources: (apiVersion, kind) -> the schema they are validated against.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): KUBERNETES / "schemas" / "scaledobject-keda.sh-v1alpha1.json",
}
#: What the production overlay reads from overlays/production/secrets/ (its README.md says what each is).
PRODUCTION_SECRET_FILES = (
    "auth.env",
    "upload-session.env",
    "database.env",
    "s3-metadata.env",
    "s3-upload.env",
    "s3-processor.env",
    "s3-download.env",
    *(
        f"tls/{service}/{name}"
        for service in ("metadata", "upload", "processor", "download", "edge")
        for name in ("tls.crt", "tls.key", "ca.crt")
    ),
)


class CheckFailed(Exception):
    """Rendering or validation failed; the message says what and where."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise CheckFailed("kubectl not found: install it (Debian: apt-get install kubernetes-client)")
    return found


def render_directory(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise CheckFailed(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _throwaway_secret(path: Path) -> str:
    """A value of the right shape for each production secret file, meaning nothing."""
    token = secrets.token_urlsafe(32)
    if path.suffix != ".env":
        return f"throwaway {path.name} for rendering only\n"
    if path.name == "auth.env":
        return f"FILESTORE_AUTH_SECRET={token}\n"
    if path.name == "upload-session.env":
        return f"FILESTORE_UPLOAD_SESSION_KEY={token}\n"
    if path.name == "database.env":
        return f"FILESTORE_DATABASE_URL=postgresql+asyncpg://filestore:{token}@postgres.example.internal/filestore\n"
    return f"FILESTORE_S3_ACCESS_KEY={path.stem}\nFILESTORE_S3_SECRET_KEY={token}\n"


@contextmanager
def scratch_copy(*, with_secrets: bool) -> Iterator[Path]:
    """deploy/kubernetes copied to a temporary directory, its production secrets throwaway files
    (or none, ``with_secrets=False``)."""
    with tempfile.TemporaryDirectory(prefix="filestore-k8s-") as scratch:
        copy = Path(scratch) / "kubernetes"
        shutil.copytree(KUBERNETES, copy)
        secrets_dir = copy / "overlays" / "production" / "secrets"
        for name in PRODUCTION_SECRET_FILES:
            target = secrets_dir / name
            target.unlink(missing_ok=True)
            if with_secrets:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_throwaway_secret(target), encoding="utf-8")
        yield copy


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects of one overlay; production's with throwaway secrets."""
    if overlay not in OVERLAYS:
        raise ValueError(f"no overlay {overlay!r}")
    with scratch_copy(with_secrets=overlay == "production") as copy:
        return render_directory(copy / "overlays" / overlay)


def validate(document: dict[str, Any]) -> None:
    """Validate one object against its schema; raises :class:`CheckFailed`."""
    where = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
    custom = CUSTOM_SCHEMAS.get((document.get("apiVersion", ""), document.get("kind", "")))
    try:
        if custom is not None:
            schema = json.loads(custom.read_text(encoding="utf-8"))
            jsonschema.Draft202012Validator(schema).validate(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise CheckFailed(
            f"{where}: no schema for {document.get('apiVersion')} {document.get('kind')}"
        ) from None
    except jsonschema.ValidationError as error:
        path = "/".join(str(part) for part in error.absolute_path)
        raise CheckFailed(f"{where}: {error.message} (at {path or 'the top'})") from None


def main() -> int:
    failures = 0
    for overlay in OVERLAYS:
        try:
            documents = render(overlay)
        except CheckFailed as error:
            print(f"k8s-check: {overlay}: {error}", file=sys.stderr)
            failures += 1
            continue
        kinds: dict[str, int] = {}
        for document in documents:
            try:
                validate(document)
            except CheckFailed as error:
                print(f"k8s-check: {overlay}: {error}", file=sys.stderr)
                failures += 1
            kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        print(
            f"k8s-check: {overlay}: {len(documents)} objects valid against Kubernetes "
            f"{KUBERNETES_VERSION} ({summary})"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
