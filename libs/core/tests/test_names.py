"""Display names: emoji sequences are names like any other; invisible characters that can disguise a
name are refused, also the joiners and selectors of emoji where they bind no emoji."""

from __future__ import annotations

import pytest

from filestore.core.errors import InvalidArgument
from filestore.core.validation import clean_name

ZWJ = "\u200d"
VS16 = "\ufe0f"
SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"

ACCEPTED = {
    "woman technologist": f"\U0001f469{ZWJ}\U0001f4bb notes.txt",
    "with a skin tone": f"\U0001f469\U0001f3fd{ZWJ}\U0001f4bb.txt",
    "family": f"\U0001f468{ZWJ}\U0001f469{ZWJ}\U0001f467{ZWJ}\U0001f466 holiday.jpg",
    "people holding hands": f"\U0001f9d1\U0001f3fd{ZWJ}\U0001f91d{ZWJ}\U0001f9d1\U0001f3fb",
    "heart on fire": f"\u2764{VS16}{ZWJ}\U0001f525",
    "rainbow flag": f"\U0001f3f3{VS16}{ZWJ}\U0001f308 pride.png",
    "pirate flag": f"\U0001f3f4{ZWJ}\u2620{VS16}",
    "eye in speech bubble": f"\U0001f441{VS16}{ZWJ}\U0001f5e8{VS16}",
    "red heart": f"\u2764{VS16} love.txt",
    "text-style smiley": "\u263a\ufe0e.txt",
    "keycap one": f"1{VS16}\u20e3 first.txt",
    "subdivision flag": f"{SCOTLAND} trip.jpg",
    "skin tone alone": "\U0001f44d\U0001f3fd ok",
    "emoji of Unicode 15": "\U0001fae8 shaking.txt",
    "ideographic variation sequence": "\u845b\U000e0100\u57ce.txt",
    "plain": "report (final) v2.pdf",
}

REFUSED = {
    "joiner between letters": ("a\u200db.txt", 0x200D),
    "joiner at the start": (f"{ZWJ}\U0001f469.txt", 0x200D),
    "joiner at the end": (f"\U0001f469{ZWJ}", 0x200D),
    "joiner before a letter": (f"\U0001f469{ZWJ}a", 0x200D),
    "two joiners": (f"\U0001f469{ZWJ}{ZWJ}\U0001f4bb", 0x200D),
    "lone selector at the start": (f"{VS16}a.txt", 0xFE0F),
    "selector after a letter": (f"a{VS16}.txt", 0xFE0F),
    "selector after a selector": (f"\u2764{VS16}{VS16}", 0xFE0F),
    "tag outside a flag": ("\U000e0067b.txt", 0xE0067),
    "flag tags without the cancel tag": ("\U0001f3f4\U000e0067\U000e0062 x", 0xE0067),
    "cancel tag alone": ("x\U000e007f", 0xE007F),
    "right-to-left override": ("invoice\u202efdp.exe", 0x202E),
    "left-to-right mark": ("a\u200e.txt", 0x200E),
    "zero-width space": ("a\u200bb.txt", 0x200B),
    "zero-width non-joiner": ("a\u200cb.txt", 0x200C),
    "Hangul filler": ("a\u3164b.txt", 0x3164),
    "soft hyphen": ("in\u00advisible", 0x00AD),
    "ideographic selector at the start": ("\U000e0100a", 0xE0100),
    "escape": ("\x1b[31mred", 0x1B),
    "private use": ("a\ue000", 0xE000),
}


@pytest.mark.parametrize("name", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_names_with_emoji_sequences_are_kept_as_sent(name: str) -> None:
    assert clean_name(name) == name


@pytest.mark.parametrize(("name", "code_point"), REFUSED.values(), ids=REFUSED.keys())
def test_invisible_characters_that_bind_no_emoji_are_refused(name: str, code_point: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        clean_name(name)
    assert caught.value.reason == "INVALID_NAME"
    assert f"U+{code_point:04X}" in caught.value.message
