from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filestore.stack import StackConfig, StackPorts

FAKE_SERVICE = Path(__file__).with_name("fake_service.py")


@pytest.fixture
def fake_command() -> list[str]:
    return [sys.executable, str(FAKE_SERVICE)]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., StackConfig]:
    """A StackConfig in tmp_path on free ports; keyword arguments override fields."""

    def make(**overrides: Any) -> StackConfig:
        fields: dict[str, Any] = {
            "home": tmp_path / "home",
            "ports": StackPorts.free(),
            "ready_timeout_s": 30.0,
        }
        fields.update(overrides)
        return StackConfig(**fields)

    return make
