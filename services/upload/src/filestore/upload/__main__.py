"""``filestore-upload``: run the upload broker."""

from __future__ import annotations

from filestore.server.service import main_for
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings

main = main_for("upload", UploadSettings.from_env, build)

if __name__ == "__main__":
    main()
