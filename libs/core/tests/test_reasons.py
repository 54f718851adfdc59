"""Reasons are one vocabulary: the Python enum is the proto enum, no code raises a reason spelled as a
string, every reason is documented where callers read the contract, and every reason the contract
names exists."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from filestore.core import errors
from filestore.core.reasons import Reason
from filestore.v1 import error_reason_pb2

ROOT = Path(__file__).resolve().parents[3]
PROTOS = ROOT / "protos" / "filestore" / "v1"
#: Everything that raises errors: the shared libs and the services, generated code aside.
SOURCES = [*ROOT.glob("libs/*/src/filestore"), *ROOT.glob("services/*/src/filestore")]
PREFIX = "ERROR_REASON_"
_BACKTICKED = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{2,})`")


def test_the_python_enum_is_the_proto_enum() -> None:
    values = error_reason_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
    declared = [value.name for value in values if value.number != 0]
    assert [member.name for member in Reason] == [name.removeprefix(PREFIX) for name in declared]
    # What travels is the name: the value of each member, unchanged.
    assert all(member.value == member.name for member in Reason)


# ------------------------------------------------------------------------- no reason as a string


def _error_constructors() -> set[str]:
    """Names of everything that takes a reason: every error class (the SDK's own included) and the
    edge's rules, which carry one."""
    from filestore.client import errors as client_errors  # noqa: F401  (its classes subclass ours)

    classes: set[str] = set()
    pending: list[type[errors.FilestoreError]] = [errors.FilestoreError]
    while pending:
        cls = pending.pop()
        classes.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return classes | {"ValueLimit", "NamedStringRule", "Dependency"}


def _python_sources() -> Iterator[Path]:
    for root in SOURCES:
        for path in root.rglob("*.py"):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path


def _spelled_reasons(tree: ast.AST, constructors: set[str]) -> Iterator[tuple[int, str]]:
    """(line, source) of every reason given as a string literal or an f-string: to an error (or a
    rule) by keyword or position, or as a class's ``default_reason``."""
    strings = (ast.Constant, ast.JoinedStr, ast.BinOp)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name not in constructors:
                continue
            given = [keyword.value for keyword in node.keywords if keyword.arg in ("reason", "unavailable")]
            # NamedStringRule(accepts, reason, grammar) and Dependency(name, reason) take it by position.
            if name == "NamedStringRule" and len(node.args) > 1:
                given.append(node.args[1])
            for value in given:
                if isinstance(value, strings) and not (
                    isinstance(value, ast.Constant) and not isinstance(value.value, str)
                ):
                    yield node.lineno, ast.unparse(value)
        elif isinstance(node, ast.Assign):
            targets = [target.id for target in node.targets if isinstance(target, ast.Name)]
            if "default_reason" in targets and isinstance(node.value, strings):
                yield node.lineno, ast.unparse(node.value)


def test_no_code_spells_a_reason_as_a_string() -> None:
    """Each reason is raised as a member of Reason (mypy holds the raise sites to it too); a string
    would be a reason nobody declared or documented."""
    constructors = _error_constructors()
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {source}"
        for path in _python_sources()
        for line, source in _spelled_reasons(ast.parse(path.read_text()), constructors)
    ]
    assert spelled == []


@pytest.mark.parametrize(
    "source",
    [
        'raise NotFound("no such file", reason="FILE_NOT_FOUND")',
        'raise errors.FailedPrecondition("ended", reason=f"UPLOAD_{state}")',
        'RULE = NamedStringRule(is_tenant, "INVALID_TENANT", "grammar")',
        "class Refused(FilestoreError):\n    default_reason = 'REFUSED'",
    ],
)
def test_the_check_finds_a_reason_spelled_as_a_string(source: str) -> None:
    assert len(list(_spelled_reasons(ast.parse(source), _error_constructors()))) == 1


# ------------------------------------------------------------------------- documented both ways


def _contract_comments() -> tuple[set[str], set[str]]:
    """The backticked UPPER_SNAKE words of the comments callers read for errors: those of every
    service and RPC, and those of the conventions header of resources.proto."""
    documented: set[str] = set()
    for path in sorted(PROTOS.glob("*.proto")):
        comment: list[str] = []
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                comment.append(stripped)
                continue
            if stripped.startswith(("rpc ", "service ")):
                documented.update(_BACKTICKED.findall(" ".join(comment)))
            comment = []
    header = (PROTOS / "resources.proto").read_text().split("\nsyntax", 1)[0]
    return documented, set(_BACKTICKED.findall(header))


def test_every_reason_an_rpc_names_exists() -> None:
    rpcs, header = _contract_comments()
    assert (rpcs | header) - {member.value for member in Reason} == set()


def test_every_reason_is_named_where_callers_read_the_contract() -> None:
    rpcs, header = _contract_comments()
    assert {member.value for member in Reason} - (rpcs | header) == set()


def test_every_reason_is_documented_with_its_status_code() -> None:
    """Each value of the proto enum has a comment naming the status code it comes with, or saying
    that it is no RPC's error at all."""
    text = (PROTOS / "error_reason.proto").read_text()
    codes = {code.name for code in grpc.StatusCode}
    undocumented = []
    for member in Reason:
        comment = re.search(rf"((?:[ ]*//[^\n]*\n)+)[ ]*{PREFIX}{member.name} = ", text)
        words = set(re.findall(r"[A-Z_]+", comment.group(1))) if comment is not None else set()
        if comment is None or not (words & codes or "never an RPC's error" in comment.group(1)):
            undocumented.append(member.name)
    assert undocumented == []


# ------------------------------------------------------------------------------------ factories


def test_file_not_found_is_built_one_way() -> None:
    refusal = errors.file_not_found("f-1")
    assert isinstance(refusal, errors.NotFound)
    assert (refusal.reason, refusal.message, refusal.metadata) == (
        Reason.FILE_NOT_FOUND,
        "no such file",
        {"file_id": "f-1"},
    )


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("COMPLETED", Reason.UPLOAD_COMPLETED),
        ("ABORTED", Reason.UPLOAD_ABORTED),
        ("EXPIRED", Reason.UPLOAD_EXPIRED),
    ],
)
def test_an_ended_upload_names_how_it_ended(state: str, reason: Reason) -> None:
    refusal = errors.upload_ended("u-1", state)
    assert isinstance(refusal, errors.FailedPrecondition)
    assert (refusal.reason, refusal.metadata) == (reason, {"upload_id": "u-1", "state": state})


def test_a_received_reason_is_kept_even_when_this_release_does_not_know_it() -> None:
    received = errors.Unavailable.received("later", reason="SOMETHING_NEW", domain="x.filestore.v1")
    assert (received.reason, received.domain, received.retryable) == ("SOMETHING_NEW", "x.filestore.v1", True)
