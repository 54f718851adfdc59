# One image for the services (the command picks one): filestore-metadata, filestore-upload,
# filestore-processor, filestore-download, filestore-edge, and the migration step
# (python -m filestore.metadata.db.migrate upgrade). Built in two stages; runs as an unprivileged user.
#
# BASE_IMAGE: the official Python image by default. A plain Debian bookworm image works too (where no
# registry can be reached, `make test-compose` builds one with debootstrap): the stages then install
# Debian's Python 3.11 themselves. Both stages must use the same base, since the virtual environment
# points at the interpreter by its path.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
RUN command -v python3 >/dev/null \
    || { apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
         && rm -rf /var/lib/apt/lists/*; }
# uv in a venv of its own: Debian's Python refuses a system-wide pip install (PEP 668).
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9
ENV UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/filestore
WORKDIR /src
# The third-party dependencies first, from the lock alone, so that a change of our code rebuilds only
# the layer below (--frozen: the members' pyproject.toml files are not needed yet).
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --all-packages --no-dev --no-install-workspace
COPY libs libs
COPY services services
# Only what runs: no dev tools; the workspace installed into /opt/filestore.
RUN /opt/uv/bin/uv sync --frozen --all-packages --no-dev --no-editable

FROM ${BASE_IMAGE}
# The processor's tools: libmagic (sniffing), tesseract (OCR), ffmpeg (video frames); Python itself
# when the base has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 tesseract-ocr tesseract-ocr-eng ffmpeg \
       $(command -v python3 >/dev/null || echo python3) \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin filestore
COPY --from=build /opt/filestore /opt/filestore
ENV PATH=/opt/filestore/bin:$PATH PYTHONUNBUFFERED=1
USER filestore
EXPOSE 50051 50052 50053 50054 8090
# Each service runs with its own command (see docker-compose.yml); metadata by default.
CMD ["filestore-metadata"]
