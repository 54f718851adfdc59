"""``filestore-download``: run the download signer."""

from __future__ import annotations

from filestore.download.app import build
from filestore.download.settings import DownloadSettings
from filestore.server.service import main_for

main = main_for("download", DownloadSettings.from_env, build)

if __name__ == "__main__":
    main()
