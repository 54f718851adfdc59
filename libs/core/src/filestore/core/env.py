"""The typed reader of configuration from environment variables.

Every program (a service, the embedded stack, the command line) parses its configuration once at start
with :class:`Env`; a missing or malformed variable raises :class:`SettingsError`, whose one-line
message names the variable, and :func:`exit_on_settings_error` turns that into a clean exit with status
2. Nothing reads ``os.environ`` after start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn, TypeVar

__all__ = ["PREFIX", "Env", "SettingsError", "exit_on_settings_error"]

T = TypeVar("T")
PREFIX = "FILESTORE_"


class SettingsError(Exception):
    """A configuration variable is missing or malformed; the message names it."""


class Env:
    """Typed accessors over an environment mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: T | None, parse: Callable[[str], T], kind: str) -> T:
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise SettingsError(f"{name} is required but not set")
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise SettingsError(f"{name}={raw!r} is not a valid {kind}{detail}") from None

    def string(self, name: str, default: str | None = None) -> str:
        return self._parse(name, default, lambda raw: raw, "string")

    def optional_str(self, name: str) -> str | None:
        return self._raw(name)

    def integer(
        self, name: str, default: int | None = None, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        def parse(raw: str) -> int:
            value = int(raw, 10)
            if minimum is not None and value < minimum:
                raise ValueError(f"must be >= {minimum}")
            if maximum is not None and value > maximum:
                raise ValueError(f"must be <= {maximum}")
            return value

        return self._parse(name, default, parse, "integer")

    def number(self, name: str, default: float | None = None, *, minimum: float | None = None) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if minimum is not None and value < minimum:
                raise ValueError(f"must be >= {minimum}")
            return value

        return self._parse(name, default, parse, "number")

    def boolean(self, name: str, default: bool | None = None) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError("use true or false")

        return self._parse(name, default, parse, "boolean")

    def address(self, name: str, default: str | None = None) -> str:
        """A ``host:port`` pair; the port must be a number in 0..65535 (0 = pick a free one)."""

        def parse(raw: str) -> str:
            host, sep, port = raw.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("expected host:port")
            return raw

        return self._parse(name, default, parse, "address")

    def service_address(self, name: str, default: str | None = None) -> str:
        """Where another Filestore service answers: ``host:port``, a gRPC target such as
        ``dns:///name:port``, or several replicas' ``ip:port``, comma separated, which a channel
        balances round_robin (see :func:`filestore.core.channels.channel_target`)."""
        # Imported here: channels depends on this module (through tls).
        from filestore.core.channels import channel_target

        def parse(raw: str) -> str:
            parts = [part.strip() for part in raw.split(",") if part.strip()]
            if not parts:
                raise ValueError("expected host:port")
            for part in parts:
                host, sep, port = part.rpartition(":")
                if not part.startswith("dns:") and (
                    not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535
                ):
                    raise ValueError(f"{part!r} is not host:port")
            channel_target(raw)  # a list must name IP addresses of one family
            return ",".join(parts)

        return self._parse(name, default, parse, "address")

    def url(self, name: str, default: str | None = None, *, schemes: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            scheme = raw.split("://", 1)[0] if "://" in raw else ""
            if scheme not in schemes:
                raise ValueError(f"scheme must be one of {', '.join(schemes)}")
            return raw

        return self._parse(name, default, parse, "URL")

    def csv(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())


@contextmanager
def exit_on_settings_error(program: str) -> Iterator[None]:
    """Turn a :class:`SettingsError` into one clear line on stderr and exit status 2."""
    try:
        yield
    except SettingsError as exc:
        _die(program, str(exc))


def _die(program: str, message: str) -> NoReturn:
    print(f"{program}: configuration error: {message}", file=sys.stderr)
    raise SystemExit(2)
