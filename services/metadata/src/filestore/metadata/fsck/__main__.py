"""``python -m filestore.metadata.fsck``: the same as ``filestore-fsck``."""

from __future__ import annotations

import sys

from filestore.metadata.fsck.cli import main

if __name__ == "__main__":
    sys.exit(main())
