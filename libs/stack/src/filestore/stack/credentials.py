"""Secrets of the embedded stack: S3 keys and the services' token secret.

They are generated once per state directory and kept in 0600 files, so data written before a
restart stays readable and tokens minted before it stay valid.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from filestore.stack.config import StackPaths
from filestore.stack.errors import StackConfigError

__all__ = [
    "S3_IDENTITY_NAME",
    "StackCredentials",
    "load_or_create_credentials",
    "read_auth_secret",
    "read_s3_credentials",
    "write_private_file",
]

S3_IDENTITY_NAME = "filestore"
_ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class StackCredentials:
    """Secrets shared with the services; ``repr`` never shows them."""

    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    auth_secret: str = field(repr=False)


def write_private_file(path: Path, content: str) -> None:
    """Write ``content`` readable by the owner only, atomically (a crash leaves the old file or none)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_s3_credentials(path: Path) -> tuple[str, str]:
    """(access key, secret key) from an ``s3_credentials.json`` file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        access_key, secret_key = data["access_key"], data["secret_key"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackConfigError(f"{path} is not a readable S3 credentials file ({exc})") from None
    if not isinstance(access_key, str) or not isinstance(secret_key, str) or not access_key or not secret_key:
        raise StackConfigError(f"{path} is not a readable S3 credentials file (empty keys)")
    return access_key, secret_key


def read_auth_secret(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StackConfigError(f"cannot read the auth secret {path} ({exc})") from None
    if not secret:
        raise StackConfigError(f"the auth secret {path} is empty")
    return secret


def load_or_create_credentials(paths: StackPaths) -> StackCredentials:
    """The secrets of ``paths.home``, generating missing ones; rewrites SeaweedFS's identities file."""
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not paths.s3_credentials.exists():
        access_key = "FS" + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(18))
        write_private_file(
            paths.s3_credentials,
            json.dumps({"access_key": access_key, "secret_key": secrets.token_urlsafe(30)}, indent=2) + "\n",
        )
    if not paths.auth_secret.exists():
        write_private_file(paths.auth_secret, secrets.token_hex(32) + "\n")
    access_key, secret_key = read_s3_credentials(paths.s3_credentials)
    # Regenerated every start from the credentials file, the single source of truth.
    identities = {
        "identities": [
            {
                "name": S3_IDENTITY_NAME,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_private_file(paths.s3_identities, json.dumps(identities, indent=2) + "\n")
    return StackCredentials(
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        auth_secret=read_auth_secret(paths.auth_secret),
    )
