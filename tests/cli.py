"""The ``filestore`` command run as a subprocess, from the shell of a user who found the stack
through its stack.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from filestore.stack import Stack

CLI = [sys.executable, "-m", "filestore.client"]


def run(*args: str | Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def user_shell(stack: Stack, home: Path, *, tenant: str) -> dict[str, str]:
    """The environment of alice of ``tenant``: the stack's stack.json and the command's state under
    ``home``, no other FILESTORE_ variable."""
    stack_json = stack.write_stack_json(home / "stack.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILESTORE_")}
    env.update(
        FILESTORE_HOME=str(stack_json.parent),
        FILESTORE_STATE_DIR=str(home / "state"),
        FILESTORE_USER="alice",
        FILESTORE_TENANT=tenant,
    )
    return env
