"""The last line before storage: a key is built only from a tenant and ids that cannot change its
shape, whatever path through the code brought them."""

from __future__ import annotations

import pytest

from filestore.metadata.db import store

FILE_ID = "0f8e3f52-2222-4e8e-9a0f-1d2c3b4a5e6f"


def test_keys_are_built_from_a_tenant_and_ids() -> None:
    assert store.original_storage_key("acme", FILE_ID) == f"originals/acme/{FILE_ID}"
    assert (
        store.derivative_storage_key("acme", FILE_ID, "thumbnail_256")
        == f"derivatives/acme/{FILE_ID}/thumbnail_256"
    )


@pytest.mark.parametrize("tenant", ["x/y", "..", ".", "", "a\x00b", "t" * 64, "*", "a b", "acme\n"])
def test_a_tenant_that_could_change_a_keys_shape_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="not a tenant"):
        store.original_storage_key(tenant, FILE_ID)
    with pytest.raises(ValueError, match="not a tenant"):
        store.derivative_storage_key(tenant, FILE_ID, "text")


@pytest.mark.parametrize("segment", ["..", ".", "", "a/b", "../x", "a\x00", "id\n", "x" * 129])
def test_an_id_or_kind_that_could_change_a_keys_shape_is_refused(segment: str) -> None:
    with pytest.raises(ValueError, match="not a key segment"):
        store.original_storage_key("acme", segment)
    with pytest.raises(ValueError, match="not a key segment"):
        store.derivative_storage_key("acme", segment, "text")
    with pytest.raises(ValueError, match="not a key segment"):
        store.derivative_storage_key("acme", FILE_ID, segment)
