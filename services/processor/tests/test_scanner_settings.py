"""FILESTORE_CLAMD_ADDR: an address, or `none` for a deployment without a scanner (files are then not
scanned: the scan step ends SKIPPED TOOL_MISSING). Nothing else turns scanning off."""

from __future__ import annotations

import pytest

from filestore.core.env import Env, SettingsError
from filestore.processor.pipeline_config import PipelineSettings


def test_the_default_is_a_local_clamd() -> None:
    assert PipelineSettings.from_env(Env({})).clamd_address == "127.0.0.1:3310"


def test_none_means_no_scanner() -> None:
    assert PipelineSettings.from_env(Env({"FILESTORE_CLAMD_ADDR": "none"})).clamd_address is None


# Only the documented spelling turns scanning off; "off" or "None" is a typo, refused like any other.
@pytest.mark.parametrize("value", ["off", "None", "127.0.0.1"])
def test_anything_else_must_be_an_address(value: str) -> None:
    with pytest.raises(SettingsError, match="FILESTORE_CLAMD_ADDR"):
        PipelineSettings.from_env(Env({"FILESTORE_CLAMD_ADDR": value}))
