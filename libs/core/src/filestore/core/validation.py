"""Checks on what clients declare, shared by every service that accepts it. A refused value raises
InvalidArgument with a precise reason; names are metadata only and never part of a storage key.

The limits here are the contract's (the comments of ``protos/filestore/v1``) and live here once: the
edge checks, the metadata store's last-line checks and the database schema all use these constants."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

import regex

from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason

__all__ = [
    "MAX_CONTENT_TYPE_CHARS",
    "MAX_EXTRACTED_TEXT_BYTES",
    "MAX_LABELS",
    "MAX_LABEL_KEY_CHARS",
    "MAX_LABEL_VALUE_CHARS",
    "MAX_NAME_CHARS",
    "check_content_type",
    "check_crc32",
    "check_labels",
    "check_sha256",
    "clean_name",
    "is_content_type",
]

#: A file's display name, in characters after NFC normalization (File.name, CreateUploadRequest.name).
MAX_NAME_CHARS = 255
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 63
MAX_LABEL_VALUE_CHARS = 255
#: RFC 6838: a type and a subtype of at most 127 characters each, so 255 with the slash.
_MAX_TYPE_PART_CHARS = 127
MAX_CONTENT_TYPE_CHARS = 2 * _MAX_TYPE_PART_CHARS + 1
#: Text extracted from a file (OCR, a PDF's text layer), in bytes of UTF-8: bounds the row and the
#: ``text_contains`` scan. The processor truncates to it; the metadata service refuses more.
MAX_EXTRACTED_TEXT_BYTES = 1024 * 1024
# Each is matched whole (fullmatch): `$` would also accept a trailing newline.
_LABEL_KEY = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_LABEL_KEY_CHARS - 1}}}")
# RFC 6838 restricted-name characters for type and subtype; parameters are not accepted here.
_TYPE_PART = rf"[a-z0-9][a-z0-9!#$&^_.+-]{{0,{_MAX_TYPE_PART_CHARS - 1}}}"
_CONTENT_TYPE = re.compile(rf"{_TYPE_PART}/{_TYPE_PART}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CRC32 = re.compile(r"[0-9a-f]{8}")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# In names: those categories and every default-ignorable code point (zero-width characters, variation
# selectors, Hangul fillers, tags), which render as nothing and can disguise a name. Bidirectional
# controls are format characters: overrides and isolates make "evil\u202egnp.exe" display as
# "evilexe.png". The Unicode data is the `regex` module's, newer than the interpreter's, so that
# this year's emoji are not "unassigned".
_INVISIBLE_IN_NAMES = regex.compile(r"[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Default_Ignorable_Code_Point}]")
# Emoji are made of three of those (Unicode TS #51), accepted where they bind an emoji sequence:
# the zero-width joiner between two emoji (woman U+200D laptop: a woman technologist), a variation
# selector after a character it can modify (U+2764 U+FE0F: a red heart), and tag characters in a
# flag's tag sequence (U+1F3F4, tags spelling "gbsct", U+E007F: the flag of Scotland).
_ZWJ = "\u200d"
_EMOJI_VARIATION_SELECTORS = frozenset({"\ufe0e", "\ufe0f"})
_EXTENDED_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
_EMOJI = regex.compile(r"\p{Emoji}")
_VARIATION_SELECTOR = regex.compile(r"\p{Variation_Selector}")
# Other variation selectors (ideographic and standardized variants) modify a letter or a symbol.
_LETTER_OR_SYMBOL = regex.compile(r"[\p{L}\p{S}]")
_SKIN_TONE_MODIFIERS = frozenset(chr(code) for code in range(0x1F3FB, 0x1F400))
_BLACK_FLAG = "\U0001f3f4"
_CANCEL_TAG = "\U000e007f"


def clean_name(name: str) -> str:
    """The display name to store: NFC-normalized and trimmed. Control and format characters
    (bidirectional overrides among them) and other invisible characters, empty and over-long names
    are refused rather than silently altered, so what users see is what was sent; the joiners,
    variation selectors and tags of emoji sequences are accepted where they bind one. Path
    separators are harmless: keys never hold names."""
    normalized = unicodedata.normalize("NFC", name).strip()
    if not normalized:
        raise InvalidArgument("name must not be empty", reason=Reason.INVALID_NAME)
    if len(normalized) > MAX_NAME_CHARS:
        raise InvalidArgument(
            f"name is longer than {MAX_NAME_CHARS} characters",
            reason=Reason.INVALID_NAME,
            metadata={"max_chars": str(MAX_NAME_CHARS)},
        )
    binding = _emoji_binding_positions(normalized)
    for position, char in enumerate(normalized):
        if position not in binding and _INVISIBLE_IN_NAMES.match(char):
            raise InvalidArgument(
                f"name contains the forbidden character U+{ord(char):04X}", reason=Reason.INVALID_NAME
            )
    return normalized


def _emoji_binding_positions(name: str) -> set[int]:
    """Positions of the invisible characters in ``name`` that bind an emoji sequence."""
    binding: set[int] = set()
    for position, char in enumerate(name):
        before = name[position - 1] if position > 0 else ""
        if char == _ZWJ:
            following = name[position + 1 : position + 2]
            if _ends_emoji(name, position) and following and _EXTENDED_PICTOGRAPHIC.match(following):
                binding.add(position)
        elif char in _EMOJI_VARIATION_SELECTORS:
            if before and _EMOJI.match(before):
                binding.add(position)
        elif _VARIATION_SELECTOR.match(char):
            if before and _LETTER_OR_SYMBOL.match(before):
                binding.add(position)
        elif char == _BLACK_FLAG:
            # A subdivision flag: the black flag, tag characters U+E0020-E007E, then CANCEL TAG.
            end = position + 1
            while end < len(name) and 0xE0020 <= ord(name[end]) <= 0xE007E:
                end += 1
            if end > position + 1 and name[end : end + 1] == _CANCEL_TAG:
                binding.update(range(position + 1, end + 1))
    return binding


def _ends_emoji(name: str, joiner: int) -> bool:
    """Whether the character before position ``joiner`` ends an emoji: a pictograph, possibly with
    its skin tone and presentation selector."""
    position = joiner - 1
    while position > 0 and (
        name[position] in _SKIN_TONE_MODIFIERS or name[position] in _EMOJI_VARIATION_SELECTORS
    ):
        position -= 1
    return position >= 0 and _EXTENDED_PICTOGRAPHIC.match(name[position]) is not None


def is_content_type(value: str) -> bool:
    """Whether ``value`` is a lower-case ``type/subtype`` (no parameters) of at most
    MAX_CONTENT_TYPE_CHARS characters: what a file's content types may hold."""
    return _CONTENT_TYPE.fullmatch(value) is not None


def check_content_type(content_type: str, *, allowed: tuple[str, ...] = ()) -> str:
    """``type/subtype`` in lower case; with ``allowed``, one of those (``image/*`` wildcards work)."""
    normalized = content_type.strip().lower()
    if not is_content_type(normalized):
        raise InvalidArgument("content_type must be type/subtype", reason=Reason.INVALID_CONTENT_TYPE)
    if allowed and not any(
        normalized == rule or (rule.endswith("/*") and normalized.startswith(rule[:-1])) for rule in allowed
    ):
        raise InvalidArgument(
            f"content type {normalized} is not allowed", reason=Reason.CONTENT_TYPE_NOT_ALLOWED
        )
    return normalized


def check_sha256(sha256: str) -> str:
    """Empty (not declared) or 64 lower-case hex characters."""
    if sha256 and not _SHA256.fullmatch(sha256):
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason=Reason.INVALID_SHA256)
    return sha256


def check_crc32(crc32: str) -> str:
    """8 lower-case hex characters: a CRC32, big-endian, as S3's ``x-amz-checksum-crc32`` holds it."""
    if not _CRC32.fullmatch(crc32):
        raise InvalidArgument("crc32 must be 8 lower-case hex characters", reason=Reason.INVALID_CRC32)
    return crc32


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """At most MAX_LABELS labels; keys 1-MAX_LABEL_KEY_CHARS of ``[a-z0-9_-]`` starting alphanumeric;
    values up to MAX_LABEL_VALUE_CHARS characters."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(
            f"at most {MAX_LABELS} labels",
            reason=Reason.INVALID_LABELS,
            metadata={"max_labels": str(MAX_LABELS)},
        )
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"label key {key[:64]!r} is not [a-z0-9_-]{{1,{MAX_LABEL_KEY_CHARS}}}",
                reason=Reason.INVALID_LABELS,
            )
        if len(value) > MAX_LABEL_VALUE_CHARS or any(
            unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value
        ):
            raise InvalidArgument(
                f"label {key!r}: value over {MAX_LABEL_VALUE_CHARS} characters or with control characters",
                reason=Reason.INVALID_LABELS,
            )
    return dict(labels)
