"""The last line before storage: a key is built only from a tenant and ids that cannot change its
shape, whatever path through the code brought them; and a key reads back to the parts it was built
from, or to nothing when the layout could not have built it."""

from __future__ import annotations

import pytest

from filestore.core.keys import KeyKind, StorageKey, derivative_key, key_prefix, original_key, parse_key

FILE_ID = "0f8e3f52-2222-4e8e-9a0f-1d2c3b4a5e6f"


def test_keys_are_built_from_a_tenant_and_ids() -> None:
    assert original_key("acme", FILE_ID) == f"originals/acme/{FILE_ID}"
    assert derivative_key("acme", FILE_ID, "thumbnail_256") == f"derivatives/acme/{FILE_ID}/thumbnail_256"
    assert key_prefix(KeyKind.ORIGINAL) == "originals/"
    assert key_prefix(KeyKind.DERIVATIVE, "acme") == "derivatives/acme/"


@pytest.mark.parametrize("tenant", ["x/y", "..", ".", "", "a\x00b", "t" * 64, "*", "a b", "acme\n"])
def test_a_tenant_that_could_change_a_keys_shape_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="not a tenant"):
        original_key(tenant, FILE_ID)
    with pytest.raises(ValueError, match="not a tenant"):
        derivative_key(tenant, FILE_ID, "text")
    with pytest.raises(ValueError, match="not a tenant"):
        key_prefix(KeyKind.ORIGINAL, tenant)


@pytest.mark.parametrize("segment", ["..", ".", "", "a/b", "../x", "a\x00", "id\n", "x" * 129])
def test_an_id_or_kind_that_could_change_a_keys_shape_is_refused(segment: str) -> None:
    with pytest.raises(ValueError, match="not a key segment"):
        original_key("acme", segment)
    with pytest.raises(ValueError, match="not a key segment"):
        derivative_key("acme", segment, "text")
    with pytest.raises(ValueError, match="not a key segment"):
        derivative_key("acme", FILE_ID, segment)


def test_only_a_derivative_has_a_derivative_kind() -> None:
    with pytest.raises(ValueError, match="derivative kind"):
        StorageKey(KeyKind.ORIGINAL, "acme", FILE_ID, "text")
    with pytest.raises(ValueError, match="derivative kind"):
        StorageKey(KeyKind.DERIVATIVE, "acme", FILE_ID)


def test_built_keys_parse_back_to_their_parts() -> None:
    assert parse_key(original_key("acme", "f-1")) == StorageKey(KeyKind.ORIGINAL, "acme", "f-1")
    assert parse_key(derivative_key("acme", "f-1", "thumbnail_256")) == StorageKey(
        KeyKind.DERIVATIVE, "acme", "f-1", "thumbnail_256"
    )
    assert str(StorageKey.derivative("acme", "f-1", "text")) == "derivatives/acme/f-1/text"


@pytest.mark.parametrize(
    "key",
    [
        "originals/acme",
        "originals/acme/",
        "originals//f-1",
        "originals/acme/f-1/extra",
        "derivatives/acme/f-1",
        "blobs/sha256/ab/cd/abcd",
        "elsewhere/acme/f-1",
        # The right number of segments, but not ones a key is built from.
        "originals/../f-1",
        "originals/acme/sp ace",
        "derivatives/acme/f-1/..",
    ],
)
def test_keys_of_another_shape_have_no_parts(key: str) -> None:
    assert parse_key(key) is None
