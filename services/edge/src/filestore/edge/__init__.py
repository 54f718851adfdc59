"""Filestore's browser face: the public RPCs over Connect and gRPC-Web (see docs/browser.md)."""
