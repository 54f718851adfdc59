"""``filestore-download``: run the download signer."""

from __future__ import annotations

from filestore.core.service import main_for
from filestore.download.app import build
from filestore.download.settings import DownloadSettings

main = main_for("download", DownloadSettings.from_env, build)

if __name__ == "__main__":
    main()
