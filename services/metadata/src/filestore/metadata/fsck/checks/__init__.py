"""The reconciler's checks, one module each; :mod:`filestore.metadata.fsck.reconciler` runs them in
order. Each reads the catalogue and storage through a :class:`filestore.metadata.fsck.scan.Scan` and
repairs through :mod:`filestore.metadata.db.store` and the scan's storage."""
