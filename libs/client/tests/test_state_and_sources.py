"""The resume state file and the byte sources uploads read from."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from pathlib import Path

import pytest

from filestore.client.sources import SourceIdentity, crc32_of_range, open_source, sha256_of_range
from filestore.client.state import ResumeState, StateStore, default_state_dir


def a_state() -> ResumeState:
    return ResumeState(
        upload_id="u1",
        file_id="f1",
        source=SourceIdentity("/data/video.mp4", 12, 34),
        name="video.mp4",
        content_type="video/mp4",
        part_size=5,
        part_count=3,
        parts={2: '"etag-2"', 1: '"etag-1"'},
    )


def test_state_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "uploads")
    path = store.path_for("/data/video.mp4", "127.0.0.1:50052")
    store.save(path, a_state())
    assert store.load(path) == a_state()
    assert [p.name for p in store.directory.iterdir()] == [path.name]  # no temp file left behind
    assert list(json.loads(path.read_text())["parts"]) == ["1", "2"]
    store.remove(path)
    assert store.load(path) is None


def test_state_is_keyed_by_file_and_broker(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    one = store.path_for("/a", "broker-1:1")
    assert one == store.path_for("/a", "broker-1:1")
    assert one != store.path_for("/a", "broker-2:1")
    assert one != store.path_for("/b", "broker-1:1")


@pytest.mark.parametrize("content", ["{not json", '{"version": 2}', '{"version": 1, "upload_id": "u"}'])
def test_unreadable_states_mean_start_over(tmp_path: Path, content: str) -> None:
    store = StateStore(tmp_path)
    path = store.path_for("/a", "b")
    path.write_text(content)
    assert store.load(path) is None


def test_default_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FILESTORE_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FILESTORE_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "filestore" / "uploads"


def test_every_kind_of_source_reads_by_offset(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    path = tmp_path / "d.bin"
    path.write_bytes(data)
    handle = io.BytesIO(b"xx" + data)
    handle.seek(2)  # a file object is read from where it stands
    for source in (open_source(data), open_source(path), open_source(handle)):
        assert source.size == len(data)
        assert source.read_at(1000, 10) == data[1000:1010]
        assert sha256_of_range(source, 5, 5000) == hashlib.sha256(data[5:5005]).hexdigest()
        assert crc32_of_range(source, 5, 5000) == f"{zlib.crc32(data[5:5005]):08x}"
        source.close()
    assert open_source(path).identity == SourceIdentity(
        str(path.resolve()), len(data), path.stat().st_mtime_ns
    )


def test_a_changed_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"a" * 100)
    source = open_source(path)
    assert source.unchanged()
    path.write_bytes(b"b" * 101)
    os.utime(path, ns=(1, 1))
    assert not source.unchanged()
    source.close()


def test_unusable_sources_are_refused() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    with pytest.raises(TypeError, match="seekable"):
        open_source(Pipe())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot upload"):
        open_source(42)  # type: ignore[arg-type]
