"""The embedded Filestore stack: SeaweedFS, NATS and the four services as local processes.

Typical use in a test fixture::

    config = StackConfig(home=tmp_path, ports=StackPorts.free())
    async with Stack(config) as stack:
        endpoints = stack.endpoints

and from a shell, ``filestore-stack run`` / ``filestore-stack status``.
"""

from __future__ import annotations

from filestore.stack.config import (
    ALL_COMPONENTS,
    FACES,
    INFRASTRUCTURE,
    SERVICES,
    RestartPolicy,
    StackConfig,
    StackPaths,
    StackPorts,
    port_env_var,
)
from filestore.stack.credentials import StackCredentials
from filestore.stack.endpoints import StackEndpoints, StackInfo, check_health, load_stack_json
from filestore.stack.errors import (
    StackConfigError,
    StackCrashLoopError,
    StackError,
    StackPortInUseError,
    StackStartError,
)
from filestore.stack.process import ManagedProcess, find_executable, pid_alive
from filestore.stack.stack import Stack

__all__ = [
    "ALL_COMPONENTS",
    "FACES",
    "INFRASTRUCTURE",
    "SERVICES",
    "ManagedProcess",
    "RestartPolicy",
    "Stack",
    "StackConfig",
    "StackConfigError",
    "StackCrashLoopError",
    "StackCredentials",
    "StackEndpoints",
    "StackError",
    "StackInfo",
    "StackPaths",
    "StackPortInUseError",
    "StackPorts",
    "StackStartError",
    "check_health",
    "find_executable",
    "load_stack_json",
    "pid_alive",
    "port_env_var",
]
