"""The janitor's retry rule, with a fake at its ``ObjectDeleter`` boundary: storage's refusal is final
(asking again would get the same answer), storage's silence is tried again and then left to the
reconciler. Deletions against the real storage: tests/test_dependencies_down.py."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.metadata import janitor
from filestore.metadata.janitor import ObjectJanitor
from filestore.server.storage import StorageRefused


class ScriptedDeleter:
    """Answers each key's deletions from a script: an error to raise, or None for success."""

    def __init__(self, script: dict[str, list[Exception | None]]) -> None:
        self._script = script
        self.calls: list[str] = []

    async def delete(self, key: str) -> None:
        self.calls.append(key)
        answer = self._script[key].pop(0)
        if answer is not None:
            raise answer


def silence() -> Unavailable:
    return Unavailable("storage did not answer", reason=Reason.STORAGE_UNAVAILABLE)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two retries, without the production pauses between them.
    monkeypatch.setattr(janitor, "RETRY_DELAYS_S", (0.0, 0.0))


async def test_a_refusal_is_final_and_silence_is_tried_again() -> None:
    store = ScriptedDeleter(
        {
            "refused": [StorageRefused("denied", storage_code="AccessDenied", http_status=403)],
            "silent-once": [silence(), None],
            "silent-always": [silence(), silence(), silence()],
        }
    )
    cleaner = ObjectJanitor(store, wait_s=30.0)
    with capture_logs() as logs:
        await cleaner.delete(["refused", "silent-once", "silent-always"])
    await cleaner.close()

    assert store.calls == ["refused", "silent-once", "silent-once", *["silent-always"] * 3]
    outcomes = [(entry["event"], entry["key"]) for entry in logs if entry["event"].startswith("orphaned")]
    assert outcomes == [
        ("orphaned_object_delete_failed", "refused"),
        ("orphaned_object_delete_retried", "silent-once"),
        ("orphaned_object_deleted", "silent-once"),
        ("orphaned_object_delete_retried", "silent-always"),
        ("orphaned_object_delete_retried", "silent-always"),
        ("orphaned_object_delete_failed", "silent-always"),
    ]


async def test_without_a_store_keys_are_logged_for_the_reconciler() -> None:
    cleaner = ObjectJanitor(None, wait_s=30.0)
    with capture_logs() as logs:
        await cleaner.delete(["originals/acme/kept"])
    assert [(entry["event"], entry["key"]) for entry in logs] == [
        ("orphaned_object_kept", "originals/acme/kept")
    ]
