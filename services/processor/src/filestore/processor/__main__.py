"""``filestore-processor``: run the processor (ProcessorService and the pipeline worker)."""

from __future__ import annotations

from filestore.processor.app import build
from filestore.processor.settings import ProcessorSettings
from filestore.server.service import main_for

main = main_for("processor", ProcessorSettings.from_env, build)

if __name__ == "__main__":
    main()
