"""The reconciler's pure decisions and its command line, without a database or storage (the
integration tests in ``tests/test_fsck.py`` run it against the real stack)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from filestore.metadata.db.models import UploadState
from filestore.metadata.fsck import (
    Finding,
    FindingKind,
    FsckReport,
    Resolution,
    is_stale_multipart,
    is_young,
    main,
    needs_refcount_repair,
)


def test_grace_period_boundary() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    grace = timedelta(minutes=10)
    assert is_young(now - timedelta(minutes=9), now=now, grace=grace)
    assert not is_young(now - timedelta(minutes=10), now=now, grace=grace)
    assert not is_young(now, now=now, grace=timedelta(0))


def test_a_multipart_upload_is_stale_unless_an_open_record_owns_it() -> None:
    assert is_stale_multipart("u1", [])
    assert is_stale_multipart("u1", [(None, UploadState.OPEN)])  # id not attached: not this one
    assert is_stale_multipart("u1", [("u2", UploadState.OPEN)])
    for closed in (UploadState.COMPLETED, UploadState.ABORTED, UploadState.EXPIRED):
        assert is_stale_multipart("u1", [("u1", closed)])
    assert not is_stale_multipart("u1", [("u0", UploadState.ABORTED), ("u1", UploadState.OPEN)])


def test_reference_counts_need_repair_when_drifted_or_unreferenced() -> None:
    assert not needs_refcount_repair(2, 2)
    assert needs_refcount_repair(5, 1)
    assert needs_refcount_repair(0, 1)
    assert needs_refcount_repair(1, 0)
    assert needs_refcount_repair(0, 0)


def _report(*resolutions: Resolution, repair: bool = False) -> FsckReport:
    report = FsckReport(repair=repair, grace_s=0.0, tenants=("acme",))
    report.findings = [
        Finding(kind=FindingKind.ORPHAN_OBJECT, subject=f"originals/acme/{n}", action="delete the object")
        for n in range(len(resolutions))
    ]
    for finding, resolution in zip(report.findings, resolutions, strict=True):
        finding.resolution = resolution
    return report


def test_exit_status_follows_what_is_left_unresolved() -> None:
    assert _report().exit_code == 0
    assert _report(Resolution.FOUND).exit_code == 1
    assert _report(Resolution.REPAIRED, Resolution.RESOLVED, repair=True).exit_code == 0
    assert _report(Resolution.REPAIRED, Resolution.SKIPPED, repair=True).exit_code == 1
    assert _report(Resolution.REPAIRED, Resolution.FAILED, repair=True).exit_code == 1


def test_report_as_json_and_text() -> None:
    report = _report(Resolution.FOUND, Resolution.FOUND)
    described = json.loads(json.dumps(report.to_json()))
    assert described["clean"] is False
    assert described["counts"]["orphan_object"] == 2
    assert [f["subject"] for f in described["findings"]] == ["originals/acme/0", "originals/acme/1"]
    text = report.render_text()
    assert "originals/acme/1" in text
    assert "--repair" in text
    assert "no findings" in _report().render_text()


def test_usage_and_configuration_errors_exit_with_status_2() -> None:
    err = io.StringIO()
    assert main(["--no-such-flag"], environ={}, stderr=err) == 2
    assert main(["--grace-s", "-1"], environ={}, stderr=err) == 2
    assert main([], environ={}, stderr=err) == 2
    assert "FILESTORE_S3_ENDPOINT is required" in err.getvalue()
    bad_url = {"FILESTORE_DATABASE_URL": "mysql://x", "FILESTORE_S3_ENDPOINT": "http://127.0.0.1:1"}
    assert main([], environ=bad_url, stderr=err) == 2
    assert "FILESTORE_DATABASE_URL" in err.getvalue()


def test_a_database_it_cannot_read_exits_with_status_2(tmp_path: Path) -> None:
    environ = {
        # A database without the schema: the very first query fails, before storage is asked.
        "FILESTORE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        "FILESTORE_S3_ENDPOINT": "http://127.0.0.1:1",
        "FILESTORE_S3_ACCESS_KEY": "key",
        "FILESTORE_S3_SECRET_KEY": "secret",
    }
    out, err = io.StringIO(), io.StringIO()
    assert main(["--json"], environ=environ, stdout=out, stderr=err) == 2
    assert "could not check: database" in err.getvalue()
    assert out.getvalue() == ""


def test_a_tenant_outside_the_grammar_exits_with_status_2() -> None:
    """It could name no key; checked before any configuration is read or any prefix is built."""
    err = io.StringIO()
    assert main(["--tenant", "acme", "--tenant", "x/y"], environ={}, stderr=err) == 2
    assert err.getvalue() == (
        "filestore-fsck: --tenant 'x/y' is not a tenant ([A-Za-z0-9][A-Za-z0-9._-]{0,62})\n"
    )
