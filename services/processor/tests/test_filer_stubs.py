"""The SeaweedFS filer stubs keep SeaweedFS's wire names (their freshness is checked with the others
by scripts/protogen.py --check, in tests/test_contract.py)."""

from __future__ import annotations


def test_wire_names_are_seaweedfs_own() -> None:
    # The filer routes by `/filer_pb.SeaweedFiler/<method>`; a renamed package would be UNIMPLEMENTED.
    from filestore.processor.bridge._filer import filer_pb2

    service = filer_pb2.DESCRIPTOR.services_by_name["SeaweedFiler"]
    assert service.full_name == "filer_pb.SeaweedFiler"
    fields = filer_pb2.SubscribeMetadataRequest.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in ("client_name", "path_prefix", "since_ns")} == {
        "client_name": 1,
        "path_prefix": 2,
        "since_ns": 3,
    }
