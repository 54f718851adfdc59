"""``python -m filestore.client``: the ``filestore`` command."""

import sys

from filestore.client.cli import main

sys.exit(main())
