# One image for all four services (the command picks one): filestore-metadata, filestore-upload,
# filestore-processor, filestore-download. Built in two stages; runs as an unprivileged user.
FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
# Only what runs: no dev tools; the workspace installed into /opt/filestore.
RUN UV_PROJECT_ENVIRONMENT=/opt/filestore uv sync --frozen --all-packages --no-dev --no-editable

FROM python:3.11-slim-bookworm
# The processor's tools: libmagic (sniffing), tesseract (OCR), ffmpeg (video frames).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 tesseract-ocr tesseract-ocr-eng ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin filestore
COPY --from=build /opt/filestore /opt/filestore
ENV PATH=/opt/filestore/bin:$PATH PYTHONUNBUFFERED=1
USER filestore
EXPOSE 50051 50052 50053 50054
# Each service runs with its own command (see docker-compose.yml); metadata by default.
CMD ["filestore-metadata"]
