"""``filestore-processor``: run the processor (ProcessorService and the pipeline worker)."""

from __future__ import annotations

from filestore.core.service import main_for
from filestore.processor.app import build
from filestore.processor.settings import ProcessorSettings

main = main_for("processor", ProcessorSettings.from_env, build)

if __name__ == "__main__":
    main()
