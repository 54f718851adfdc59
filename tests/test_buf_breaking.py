"""`make buf-breaking` (scripts/buf-breaking.sh): the protos of the work tree against main's, with the
rules of buf.yaml. Run in a scratch git repository holding a copy of the protos, so the real one is
never touched: an addition passes, a deleted field or a renumbered one fails and names it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "buf-breaking.sh"
BUF = REPO / "node_modules" / ".bin" / "buf"
UPLOAD_PROTO = Path("protos/filestore/v1/upload_service.proto")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def proto_repo(tmp_path: Path) -> Path:
    """A git repository whose main branch holds the current buf.yaml and protos/."""
    if not BUF.exists():
        pytest.fail("node_modules/.bin/buf is missing: run `make node-deps`")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(REPO / "protos", repo / "protos")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "protos")
    return repo


def _breaking(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        check=False,
        cwd=repo,
        env={"PATH": "/usr/bin:/bin", "BUF": str(BUF), "HOME": str(repo), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / UPLOAD_PROTO
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_main_against_itself_passes(proto_repo: Path) -> None:
    result = _breaking(proto_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "against .git#branch=main" in result.stdout


def test_adding_a_field_is_not_breaking(proto_repo: Path) -> None:
    _edit(
        proto_repo,
        "  map<int32, string> part_checksums = 3;\n}",
        "  map<int32, string> part_checksums = 3;\n  // A new optional field.\n  string note = 4;\n}",
    )
    result = _breaking(proto_repo)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (
            "  string request_id = 8;\n",
            "",
            r'field "8" with name "request_id" .*deleted',
        ),
        ("  string sha256 = 4;", "  string sha256 = 40;", r'"4" with name "sha256" .*deleted'),
    ],
    ids=["deleted-field", "renumbered-field"],
)
def test_a_breaking_change_in_the_work_tree_fails(
    proto_repo: Path, old: str, new: str, complaint: str
) -> None:
    _edit(proto_repo, old, new)
    result = _breaking(proto_repo)
    assert result.returncode != 0
    assert re.search(complaint, result.stdout + result.stderr), result.stdout + result.stderr
    assert str(UPLOAD_PROTO) in result.stdout + result.stderr


def test_a_feature_branch_is_compared_with_main_not_with_itself(proto_repo: Path) -> None:
    _git(proto_repo, "checkout", "-q", "-b", "feature")
    _edit(proto_repo, "  string sha256 = 4;", "  string sha256 = 40;")
    _git(proto_repo, "commit", "-q", "-am", "renumber")
    result = _breaking(proto_repo)
    assert result.returncode != 0
    assert "sha256" in result.stdout + result.stderr


def test_a_clone_without_a_local_main_uses_origin_main(proto_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(proto_repo), str(clone))
    _git(clone, "checkout", "-q", "-b", "feature")
    _git(clone, "branch", "-q", "-D", "main")
    _edit(clone, "  string sha256 = 4;", "  string sha256 = 40;")
    result = _breaking(clone)
    assert "against .git#ref=refs/remotes/origin/main" in result.stdout
    assert result.returncode != 0
    assert "sha256" in result.stdout + result.stderr


def test_a_detached_checkout_without_main_compares_with_its_commit(proto_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "detached"
    _git(tmp_path, "clone", "-q", str(proto_repo), str(clone))
    _git(clone, "checkout", "-q", "--detach")
    _git(clone, "branch", "-q", "-D", "main")
    _git(clone, "update-ref", "-d", "refs/remotes/origin/main")
    assert _breaking(clone).returncode == 0
    _edit(clone, "  string sha256 = 4;", "  string sha256 = 40;")
    result = _breaking(clone)
    assert "against .git#ref=HEAD" in result.stdout
    assert result.returncode != 0
    assert "sha256" in result.stdout + result.stderr


def test_without_any_commit_it_refuses_rather_than_passing(tmp_path: Path) -> None:
    repo = tmp_path / "lonely"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "trunk")
    result = _breaking(repo)
    assert result.returncode == 1
    assert "no main branch and no commit" in result.stderr
