"""Errors raised by the embedded stack; each message is one line a developer can act on."""

from __future__ import annotations

__all__ = [
    "StackConfigError",
    "StackCrashLoopError",
    "StackError",
    "StackPortInUseError",
    "StackStartError",
]


class StackError(Exception):
    """Base class of every error the stack raises."""


class StackConfigError(StackError):
    """The configuration (usually an environment variable) is missing or malformed."""


class StackPortInUseError(StackConfigError):
    """A port the stack needs is taken; raised before any process starts."""

    def __init__(self, *, port: int, name: str, host: str, env_var: str) -> None:
        self.port = port
        self.name = name
        self.host = host
        self.env_var = env_var
        super().__init__(f"port {port} ({name}) on {host} is already in use; set {env_var}")


class StackStartError(StackError):
    """A component died or did not become ready during start-up (or restart)."""

    def __init__(self, component: str, message: str, *, cause: str = "") -> None:
        self.component = component
        #: What happened, in a few words ("exited with status 3 during start-up"); the message has more.
        self.cause = cause or message
        super().__init__(message)


class StackCrashLoopError(StackError):
    """A component kept exiting while the stack ran (see :class:`RestartPolicy`): the stack gives up."""

    def __init__(self, component: str, message: str) -> None:
        self.component = component
        super().__init__(message)
