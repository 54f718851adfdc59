"""Upload session tokens: what they carry comes back intact, and nothing else is accepted."""

from __future__ import annotations

import base64
import dataclasses
import time

import pytest

from filestore.core.auth import SERVICE_ROLE, Principal
from filestore.core.env import Env, SettingsError
from filestore.core.errors import FailedPrecondition, InvalidArgument
from filestore.upload.session import SessionTokens, UploadSession
from filestore.upload.settings import session_key_from_env
from filestore.v1 import metadata_service_pb2, resources_pb2

KEY = "k" * 32
ALICE = Principal(subject="alice", tenant="acme")
NOW = 1_800_000_000
SESSION = UploadSession(
    upload_id="upl_0123456789",
    subject="alice",
    tenant="acme",
    storage_key="originals/acme/fil_0123456789",
    storage_upload_id="c2VhLXVwbG9hZC1pZA_x",
    size=100 * 1024**2 + 7,
    part_size=16 * 1024**2,
    part_count=7,
    part_checksum_algorithm=resources_pb2.CHECKSUM_ALGORITHM_SHA256,
    expires_at_s=NOW + 3600,
)


def _verify(
    tokens: SessionTokens, token: str, *, principal: Principal = ALICE, now_s: float = NOW
) -> UploadSession:
    return tokens.verify(token, upload_id=SESSION.upload_id, principal=principal, now_s=now_s)


def _refused(tokens: SessionTokens, token: str, *, principal: Principal = ALICE, upload_id: str = "") -> None:
    with pytest.raises(InvalidArgument) as refused:
        tokens.verify(token, upload_id=upload_id or SESSION.upload_id, principal=principal, now_s=NOW)
    assert refused.value.reason == "SESSION_TOKEN_INVALID"
    assert refused.value.metadata == {"upload_id": upload_id or SESSION.upload_id}


def test_a_token_gives_back_every_fact_it_was_issued_with() -> None:
    tokens = SessionTokens(KEY)
    token = tokens.issue(SESSION)
    assert _verify(tokens, token) == SESSION
    assert _verify(SessionTokens(KEY), token) == SESSION  # another replica with the same key
    assert len(token) < 300  # compact: sent with every SignParts
    for algorithm in resources_pb2.ChecksumAlgorithm.values():
        session = dataclasses.replace(SESSION, part_checksum_algorithm=algorithm)
        assert _verify(tokens, tokens.issue(session)) == session


def test_a_session_from_the_catalogue_record_carries_what_signing_needs() -> None:
    record = metadata_service_pb2.UploadRecord(
        id=SESSION.upload_id,
        tenant="acme",
        owner="alice",
        storage_key=SESSION.storage_key,
        storage_upload_id=SESSION.storage_upload_id,
        size=SESSION.size,
        part_size=SESSION.part_size,
        part_count=SESSION.part_count,
        part_checksum_algorithm=SESSION.part_checksum_algorithm,
    )
    record.expire_time.FromSeconds(NOW + 3600)
    record.expire_time.nanos = 999_000_000  # rounded down: the token ends first, never after
    assert UploadSession.of(record, ALICE) == SESSION
    assert UploadSession.of(record, ALICE).plan.part_length(7) == SESSION.size - 6 * SESSION.part_size


def test_tampering_with_any_character_or_byte_is_refused() -> None:
    tokens = SessionTokens(KEY)
    token = tokens.issue(SESSION)
    for index, char in enumerate(token):
        for other in {"A", "f", "-", "_"} - {char}:
            _refused(tokens, token[:index] + other + token[index + 1 :])
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        _refused(tokens, base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("="))
    for malformed in (
        token[:-1],
        token + "A",
        token + "=",
        token + " ",
        " " + token,
        token[:40],
        "é" + token,
        "x" * 5000,
    ):
        _refused(tokens, malformed)


def test_a_token_sealed_with_another_key_is_refused() -> None:
    _refused(SessionTokens(KEY), SessionTokens("z" * 32).issue(SESSION))


def test_a_token_is_bound_to_its_caller_and_its_upload() -> None:
    tokens = SessionTokens(KEY)
    token = tokens.issue(SESSION)
    _refused(tokens, token, principal=Principal(subject="bob", tenant="acme"))
    _refused(tokens, token, principal=Principal(subject="alice", tenant="other"))
    # A service role widens nothing: the token names its caller, tenant claim included.
    _refused(tokens, token, principal=Principal(subject="alice", tenant="*", roles=frozenset({SERVICE_ROLE})))
    _refused(tokens, token, upload_id="upl_another")


def test_an_expired_token_answers_as_an_expired_upload_does() -> None:
    tokens = SessionTokens(KEY)
    token = tokens.issue(SESSION)
    assert _verify(tokens, token, now_s=NOW + 3599) == SESSION
    for now in (NOW + 3600, NOW + 10**6):
        with pytest.raises(FailedPrecondition) as refused:
            _verify(tokens, token, now_s=now)
        assert refused.value.reason == "UPLOAD_NOT_OPEN"
    with pytest.raises(FailedPrecondition):
        _verify(tokens, token, now_s=time.time() + 10**10)


def test_no_token_is_issued_for_a_session_that_cannot_stand_alone() -> None:
    tokens = SessionTokens(KEY)
    assert tokens.issue(dataclasses.replace(SESSION, storage_upload_id="")) == ""
    assert tokens.issue(dataclasses.replace(SESSION, expires_at_s=None)) == ""


def test_the_session_key_setting() -> None:
    auth = "a" * 40
    assert session_key_from_env(Env({}), auth_secret=auth) == auth
    assert session_key_from_env(Env({"FILESTORE_UPLOAD_SESSION_KEY": KEY}), auth_secret=auth) == KEY
    with pytest.raises(SettingsError, match="FILESTORE_UPLOAD_SESSION_KEY must be at least 32"):
        session_key_from_env(Env({"FILESTORE_UPLOAD_SESSION_KEY": "short"}), auth_secret=auth)
    # The tokens' key is derived under a label of its own: never the auth secret itself.
    assert SessionTokens(auth).issue(SESSION) != SessionTokens(KEY).issue(SESSION)
