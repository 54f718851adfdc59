"""Type sniffing: what counts as evidence of an executable."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from filestore.processor import media


def test_bytes_that_merely_look_like_a_dos_com_program_are_not_executables() -> None:
    # libmagic calls any buffer starting with a jump or mov opcode a DOS .COM program; random
    # bytes do that about once in a hundred files and must not be quarantined for it.
    generator = random.Random(7)
    com_looking = [b"\xe9\x10\x01" + bytes(range(256)), b"\xeb\x3c\x90" + bytes(range(256))]
    com_looking += [bytes([0xE9]) + generator.randbytes(4095) for _ in range(20)]
    for head in com_looking:
        sniffed = media.sniff(head)
        assert sniffed == "application/octet-stream", head[:8].hex()
        assert not media.judge_types("application/pdf", sniffed).disguised_executable


def test_a_real_executable_is_still_caught_under_another_name() -> None:
    head = Path(sys.executable).resolve().read_bytes()[:8192]
    sniffed = media.sniff(head)
    assert sniffed in media.EXECUTABLE_TYPES
    assert media.judge_types("image/png", sniffed).disguised_executable
