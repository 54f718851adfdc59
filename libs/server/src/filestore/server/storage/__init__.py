"""The one home of object storage: :class:`ObjectStore`, built from a :class:`StoreConfig` value (see
:mod:`filestore.server.storage.store`)."""

from filestore.server.storage.config import DEFAULT_STORE, StoreConfig, StoreCredentials, StoreSet
from filestore.server.storage.errors import TRANSPORT_ERRORS, StorageRefused
from filestore.server.storage.results import ListedObject, ObjectHead, OpenUpload, StoredPart
from filestore.server.storage.store import CORS_DENY_ALL_ORIGIN, LIST_PAGE_SIZE, ObjectStore, cors_rules

__all__ = [
    "CORS_DENY_ALL_ORIGIN",
    "DEFAULT_STORE",
    "LIST_PAGE_SIZE",
    "TRANSPORT_ERRORS",
    "ListedObject",
    "ObjectHead",
    "ObjectStore",
    "OpenUpload",
    "StorageRefused",
    "StoreConfig",
    "StoreCredentials",
    "StoreSet",
    "StoredPart",
    "cors_rules",
]
