"""``filestore-metadata``: run the metadata service."""

from __future__ import annotations

from filestore.core.service import main_for
from filestore.metadata.app import build
from filestore.metadata.settings import MetadataSettings

main = main_for("metadata", MetadataSettings.from_env, build)

if __name__ == "__main__":
    main()
