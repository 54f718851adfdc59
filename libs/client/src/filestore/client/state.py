"""The small local file that lets a second run of an interrupted upload send only the missing parts.

One JSON file per source file, named by a hash of its path and the broker's address, written
atomically (temp file + rename) after every part, removed when the upload completes. It is a hint:
storage's own part list (GetUpload) decides what is really there, so a stale or lost state file
costs at most a re-sent part, never a corrupt upload.

Default directory: ``$FILESTORE_STATE_DIR``, else ``$XDG_STATE_HOME/filestore/uploads``, else
``~/.local/state/filestore/uploads``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from filestore.client.sources import SourceIdentity

__all__ = ["STATE_VERSION", "ResumeState", "StateStore", "default_state_dir"]

STATE_VERSION: Final = 1


def default_state_dir() -> Path:
    explicit = os.environ.get("FILESTORE_STATE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "filestore" / "uploads"


@dataclass(kw_only=True)
class ResumeState:
    """An open multipart upload of one local file, and the parts already sent (part number → ETag)."""

    upload_id: str
    file_id: str
    source: SourceIdentity
    name: str
    content_type: str
    part_size: int
    part_count: int
    parts: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **asdict(self),
            # JSON object keys are strings; keep part numbers sorted for a readable file.
            "parts": {str(n): etag for n, etag in sorted(self.parts.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> ResumeState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a version 1 upload state")
        source = data["source"]
        return cls(
            upload_id=str(data["upload_id"]),
            file_id=str(data["file_id"]),
            source=SourceIdentity(str(source["path"]), int(source["size"]), int(source["mtime_ns"])),
            name=str(data["name"]),
            content_type=str(data["content_type"]),
            part_size=int(data["part_size"]),
            part_count=int(data["part_count"]),
            parts={int(n): str(etag) for n, etag in dict(data["parts"]).items()},
        )


class StateStore:
    """Resume states in one directory, keyed by (source path, broker address)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, source_path: str, broker: str) -> Path:
        key = hashlib.sha256(f"{broker}\0{source_path}".encode()).hexdigest()[:32]
        return self.directory / f"{key}.json"

    def load(self, path: Path) -> ResumeState | None:
        """The state at ``path``; None when there is none or it is unreadable (then we start over)."""
        try:
            return ResumeState.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path, state: ResumeState) -> None:
        """Write atomically: a crash leaves the old state or the new one, never half of one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state.to_json(), handle, separators=(",", ":"))
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
