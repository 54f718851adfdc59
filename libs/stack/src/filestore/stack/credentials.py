"""Secrets of the embedded stack: S3 keys, the services' token secret and the brokers' upload
session key.

They are generated once per state directory and kept in 0600 files, so data written before a
restart stays readable and tokens minted before it stay valid.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filestore.stack.config import StackPaths
from filestore.stack.errors import StackConfigError

__all__ = [
    "S3_IDENTITY_NAME",
    "SERVICE_S3_ACTIONS",
    "StackCredentials",
    "load_or_create_credentials",
    "read_auth_secret",
    "read_s3_credentials",
    "read_service_s3_keys",
    "write_atomically",
    "write_private_file",
]

S3_IDENTITY_NAME = "filestore"
_ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
#: Least privilege: what each service may do, in the stack's bucket only (SeaweedFS actions). The
#: download signer can only read, the metadata service only delete what no file needs any more; the
#: identity written to stack.json (operators, tests) keeps full rights.
SERVICE_S3_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "upload": ("Read", "Write", "List"),
    "processor": ("Read", "Write"),
    "download": ("Read",),
    "metadata": ("Write",),
}


@dataclass(frozen=True, slots=True)
class StackCredentials:
    """Secrets shared with the services; ``repr`` never shows them."""

    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    auth_secret: str = field(repr=False)
    #: Each service's own S3 key pair, limited to SERVICE_S3_ACTIONS.
    service_s3_keys: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: The key every broker seals upload session tokens with (``FILESTORE_UPLOAD_SESSION_KEY``).
    #: Only the brokers need it, so stack.json, which describes the stack to its clients, does not
    #: name it: read back from there it is empty, and it takes no part in comparing credentials.
    upload_session_key: str = field(default="", repr=False, compare=False)


def write_atomically(path: Path, content: str | bytes, *, mode: int) -> None:
    """Write ``content`` with permissions ``mode``, atomically: a crash leaves the old file or the new
    one, never half of one (a process reading a torn secret or certificate at its start would fail)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_file(path: Path, content: str) -> None:
    """Write ``content`` readable by the owner only (in a directory only the owner may enter when it
    has to be made), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, content, mode=0o600)


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


def read_auth_secret(path: Path, *, what: str = "auth secret") -> str:
    """A one-line secret file (the auth secret, or another one named by ``what``)."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StackConfigError(f"cannot read the {what} {path} ({exc})") from None
    if not secret:
        raise StackConfigError(f"the {what} {path} is empty")
    return secret


def read_service_s3_keys(path: Path) -> dict[str, tuple[str, str]]:
    """Each service's (access key, secret key) from ``s3_credentials.json``; empty if it has none."""
    try:
        services = json.loads(path.read_text(encoding="utf-8")).get("services", {})
        return {name: (keys["access_key"], keys["secret_key"]) for name, keys in services.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StackConfigError(f"{path} is not a readable S3 credentials file ({exc})") from None


def _new_key_pair() -> dict[str, str]:
    access_key = "FS" + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(18))
    return {"access_key": access_key, "secret_key": secrets.token_urlsafe(30)}


def load_or_create_credentials(paths: StackPaths, *, bucket: str) -> StackCredentials:
    """The secrets of ``paths.home``, generating missing ones; rewrites SeaweedFS's identities file."""
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not paths.s3_credentials.exists():
        write_private_file(paths.s3_credentials, json.dumps(_new_key_pair(), indent=2) + "\n")
    if not paths.auth_secret.exists():
        write_private_file(paths.auth_secret, secrets.token_hex(32) + "\n")
    if not paths.upload_session_key.exists():
        write_private_file(paths.upload_session_key, secrets.token_hex(32) + "\n")
    access_key, secret_key = read_s3_credentials(paths.s3_credentials)
    service_keys = read_service_s3_keys(paths.s3_credentials)
    if set(service_keys) != set(SERVICE_S3_ACTIONS):
        # A state directory from before per-service identities, or a new service: add what is missing.
        data = json.loads(paths.s3_credentials.read_text(encoding="utf-8"))
        services = data.setdefault("services", {})
        for name in SERVICE_S3_ACTIONS:
            services.setdefault(name, _new_key_pair())
        write_private_file(paths.s3_credentials, json.dumps(data, indent=2) + "\n")
        service_keys = read_service_s3_keys(paths.s3_credentials)
    # Regenerated every start from the credentials file, the single source of truth.
    identities = {
        "identities": [
            {
                "name": S3_IDENTITY_NAME,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            *(
                {
                    "name": f"{S3_IDENTITY_NAME}-{name}",
                    "credentials": [{"accessKey": service_keys[name][0], "secretKey": service_keys[name][1]}],
                    "actions": [f"{action}:{bucket}" for action in actions],
                }
                for name, actions in SERVICE_S3_ACTIONS.items()
            ),
        ]
    }
    write_private_file(paths.s3_identities, json.dumps(identities, indent=2) + "\n")
    return StackCredentials(
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        auth_secret=read_auth_secret(paths.auth_secret),
        service_s3_keys=service_keys,
        upload_session_key=read_auth_secret(paths.upload_session_key, what="upload session key"),
    )
