"""Several stores at once: :class:`ObjectStores` holds an :class:`ObjectStore` per configured store
(:class:`StoreSet`), so that code reading or signing for a file asks for the store the catalogue
recorded for it, by name."""

from __future__ import annotations

from collections.abc import Iterator

from filestore.core.errors import FailedPrecondition
from filestore.core.reasons import Reason
from filestore.server.storage.config import DEFAULT_STORE, StoreSet
from filestore.server.storage.store import ObjectStore

__all__ = ["ObjectStores"]


class ObjectStores:
    """The stores of one service, by name; the first is the one ``FILESTORE_S3_*`` configure."""

    def __init__(
        self, stores: StoreSet | ObjectStore | list[ObjectStore], *, default: str | None = None
    ) -> None:
        if isinstance(stores, StoreSet):
            self._stores = {config.name: ObjectStore(config) for config in stores}
            self.default_name = stores.default
        else:
            listed = [stores] if isinstance(stores, ObjectStore) else stores
            self._stores = {store.config.name: store for store in listed}
            self.default_name = default or listed[0].config.name

    def __iter__(self) -> Iterator[ObjectStore]:
        return iter(self._stores.values())

    def __len__(self) -> int:
        return len(self._stores)

    def __contains__(self, name: object) -> bool:
        return name in self._stores

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._stores)

    @property
    def default(self) -> ObjectStore:
        """Where files go when nothing else decides."""
        return self._stores[self.default_name]

    def get(self, name: str) -> ObjectStore:
        """The store called ``name``; an empty name is the store named ``default`` (a record written
        before there were several). A store this service does not know is ``FailedPrecondition``
        ``UNKNOWN_STORE``: the catalogue names a store this deployment no longer configures."""
        store = self._stores.get(name or DEFAULT_STORE)
        if store is None:
            raise FailedPrecondition(
                f"store {name!r} is not configured here",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": name},
            )
        return store
