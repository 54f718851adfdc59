"""``filestore-metadata``: run the metadata service."""

from __future__ import annotations

from filestore.metadata.app import build
from filestore.metadata.settings import MetadataSettings
from filestore.server.service import main_for

main = main_for("metadata", MetadataSettings.from_env, build)

if __name__ == "__main__":
    main()
