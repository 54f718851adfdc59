# Filestore: the two commands are `make run` (the embedded stack) and `make test` (everything CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# Debian packages (installed when missing and running as root): those the stack uses (libmagic for
# the processor's type sniffing, clamd, tesseract, ffmpeg), and those only the tests need: nginx and its
# njs module are the CDN edge of tests/test_cdn_nginx.py, which starts its own nginx (never the system's);
# chromium is the browser Playwright drives in tests/browser/ (no browser build can be downloaded).
RUN_APT_PACKAGES := libmagic1 clamav clamav-daemon tesseract-ocr tesseract-ocr-eng ffmpeg
APT_PACKAGES := $(RUN_APT_PACKAGES) nginx libnginx-mod-http-js chromium

.PHONY: help run test lint typecheck proto proto-check buf-lint pytest env node-deps system-deps run-deps clean \
  web web-check web-bundle

help:
	@echo "make run    start the embedded stack (SeaweedFS, NATS, the four services) under \$$FILESTORE_HOME"
	@echo "make test   install what is missing, then ruff, mypy, buf lint, proto freshness and pytest"
	@echo "make proto  regenerate the Python code of protos/ (and of the SeaweedFS filer subset)"
	@echo "make test-stack  the integration tests against a running stack (FILESTORE_STACK_JSON) or compose"
	@echo "make test-compose  docker-compose.yml built and run with podman (images built locally), the suite against it"
	@echo "make test-faults  1,000 uploads while every component is killed and restarted (SQLite and PostgreSQL)"
	@echo "make test-cluster  the cluster profile: 1,000 SDK uploads while a node of every kind is killed"
	@echo "make k8s-check  render the Kubernetes overlays (deploy/kubernetes) and validate them offline"

# A fresh Debian's python3 has no venv module until python3-venv is installed (as root, as below).
$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS) || { $(call apt_install,python3-venv,required) && python3 -m venv $(TOOLS); }
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The one virtual environment of the workspace, exactly as uv.lock pins it.
env: $(if $(shell command -v uv 2>/dev/null),,$(TOOLS)/bin/uv)
	$(UV) sync --frozen --all-packages

# `npm install` honours package-lock.json; `npm ci` would refuse it, because the registry here
# serves only this platform's optional buf binaries, which the lock then does not list.
node-deps:
	@if [ ! -x $(BUF) ] || [ ! -x node_modules/.bin/esbuild ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm install --no-audit --no-fund --loglevel=error; fi

# Installs the packages of $(1) that are missing, when running as root. RUNLEVEL=1: the packages' init
# scripts must not start system daemons (nginx on port 80, clamd); the stack and the tests start their
# own, on free ports. When they cannot be installed (not root, offline, no apt), $(2) says `required`
# (make test: name them and fail) or `optional` (make run: name them in one line and go on).
define apt_install
missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq $$missing; then :; \
  elif [ "$(2)" = optional ]; then echo "could not install the Debian packages$$missing (not root, or offline): the stack starts without what it does not find, and says what that means"; \
  else echo "missing Debian packages:$$missing (install them, or run as root)"; exit 1; fi; \
fi
endef

system-deps:
	@$(call apt_install,$(APT_PACKAGES),required)

# `make run` is the first command on a fresh machine: it installs what the stack uses as `make test` does,
# but never stops for it (without clamd the stack runs and says that files are not scanned).
run-deps:
	@$(call apt_install,$(RUN_APT_PACKAGES),optional)

run: env run-deps web-bundle
	$(VENV)/bin/filestore-stack run

proto: env
	$(PY) scripts/protogen.py

proto-check: env
	$(PY) scripts/protogen.py --check

buf-lint: node-deps
	$(BUF) lint

# The protos against main's (scripts/buf-breaking.sh says which ref; BUF_BREAKING_AGAINST overrides it).
.PHONY: buf-breaking
buf-breaking: node-deps
	BUF=$(BUF) scripts/buf-breaking.sh

# The browser client (clients/web): its generated code from protos/ (clients/web/buf.gen.yaml) must be
# what buf generates now, it must typecheck, and it bundles into one ES module, clients/web/dist/.
# The Uppy adapter (clients/uppy) builds with it: clients/uppy/dist/filestore-uppy.js, the web client inside,
# @uppy/aws-s3 left to the app's own copy (it is the app's plugin the adapter configures).
WEB := clients/web
UPPY := clients/uppy
WEB_BUNDLE := $(WEB)/dist/filestore-web.js
web: node-deps
	node_modules/.bin/esbuild $(WEB)/src/index.ts --bundle --format=esm --target=es2022 --minify --sourcemap \
	  --outfile=$(WEB_BUNDLE)
	node_modules/.bin/esbuild $(UPPY)/src/index.ts --bundle --format=esm --target=es2022 --minify --sourcemap \
	  --external:@uppy/aws-s3 --outfile=$(UPPY)/dist/filestore-uppy.js

# `make run`'s demo page loads the bundle: built when it is missing or older than its sources (npm
# install first, from nothing). Without npm, one line says so and the stack starts all the same (the
# page then says the client is not built).
web-bundle:
	@if [ -f $(WEB_BUNDLE) ] && [ -z "$$(find $(WEB)/src package-lock.json -newer $(WEB_BUNDLE) -type f | head -1)" ]; then :; \
	elif command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory web; \
	else echo "npm not found (install Debian nodejs and npm): the demo page cannot load the browser client until \`make web\` builds it"; fi

web-check: node-deps
	@fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
	  $(BUF) generate --template $(WEB)/buf.gen.yaml -o "$$fresh" && \
	  diff -r "$$fresh/$(WEB)/src/gen" $(WEB)/src/gen || { \
	  echo "$(WEB)/src/gen is stale: run node_modules/.bin/buf generate --template $(WEB)/buf.gen.yaml"; exit 1; }
	node_modules/.bin/tsc --noEmit -p $(WEB)
	node_modules/.bin/tsc --noEmit -p $(UPPY)
	$(MAKE) --no-print-directory web

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: env
	$(VENV)/bin/mypy libs/core/src libs/server/src libs/stack/src services/metadata/src services/upload/src \
	  services/processor/src services/download/src services/edge/src libs/client/src scripts

# node-deps: the Node client's test runs clients/node with @grpc/grpc-js; buf's tests run buf.
pytest: env system-deps node-deps compose-deps
	$(VENV)/bin/pytest

# The integration suite against a stack the tests do not start: FILESTORE_STACK_JSON=path/to/stack.json
# (or FILESTORE_EXTERNAL_* variables), else docker-compose.yml brought up by testcontainers where a
# Docker engine is reachable; with neither it says so and fails. PYTEST_ARGS narrows the selection.
.PHONY: test-stack
test-stack: env
	$(PY) scripts/test_stack.py $(PYTEST_ARGS)

# docker-compose.yml for real, on this machine's kind (no Docker engine, no image registry): podman,
# a Debian base image made with debootstrap, the infrastructure images built from Debian packages and
# wheels (docker-compose.offline.yml), the Filestore image, `docker-compose up --wait`, the integration
# tests against it, and down (scripts/compose_stack.py). Outside `make test`: it takes minutes.
# PYTEST_ARGS narrows the selection (default: every test that runs against an external stack).
COMPOSE_APT_PACKAGES := podman runc debootstrap
.PHONY: compose-deps test-compose
compose-deps:
	@$(call apt_install,$(COMPOSE_APT_PACKAGES),required)

test-compose: env node-deps compose-deps
	$(PY) scripts/compose_stack.py -- $(PYTEST_ARGS)

# The cluster profile's fault run at full size: 1,000 SDK uploads while a node of every kind is killed
# (`make test` runs 160); prints one RESULT line. PostgreSQL at TEST_DATABASE_URL (as make test).
.PHONY: test-cluster
test-cluster: env system-deps
	FILESTORE_CLUSTER_UPLOADS=1000 $(VENV)/bin/pytest tests/test_cluster_faults.py -s -p no:logging $(PYTEST_ARGS)

# Fault injection at full size: 1,000 uploads while every component is SIGKILLed and restarted, and
# 1,000 concurrent multipart sessions, on SQLite and PostgreSQL (`make test` runs 200 on SQLite).
.PHONY: test-faults
test-faults: env system-deps
	FILESTORE_FAULT_UPLOADS=1000 FILESTORE_FAULT_SESSIONS=1000 FILESTORE_FAULT_DATABASES=sqlite,postgresql \
	  $(VENV)/bin/pytest tests/test_faults.py -s $(PYTEST_ARGS)

# deploy/kubernetes: both overlays rendered with `kubectl kustomize` and validated offline against the
# Kubernetes schemas kubernetes-validate bundles (KEDA's ScaledObject against deploy/kubernetes/schemas/).
# kubectl from PATH; where there is none, Debian's kubernetes-client (its kustomize is old, v2.0.3, and the
# manifests keep to what it renders too).
.PHONY: k8s-check
k8s-check: env
	@if ! command -v kubectl >/dev/null 2>&1; then $(call apt_install,kubernetes-client,required); fi
	$(PY) scripts/k8s_check.py

test: env node-deps system-deps lint typecheck buf-lint buf-breaking proto-check web-check k8s-check pytest

clean:
	rm -rf $(VENV) $(TOOLS) node_modules .mypy_cache .ruff_cache .pytest_cache

# Benchmarks: not part of `make test`; each prints same-run ratios and ends with a RESULT line.
bench-presign: env
	$(PY) -m benchmarks.bench_presign

bench-control: env
	$(PY) -m benchmarks.bench_control

# ListFiles at depth 10,000 vs page 1 and CreateFile throughput over 1,000,000 rows, SQLite and PostgreSQL.
.PHONY: bench-metadata
bench-metadata: env
	$(PY) -m benchmarks.bench_metadata

# 100 MB and 2 GiB objects through the full pipeline (peak RSS of each worker), complete->READY of 50 JPEGs.
.PHONY: bench-processor
bench-processor: env system-deps
	$(PY) -m benchmarks.bench_processor

# The same 1 GiB file through the SDK and through boto3's upload_file (same parts, same concurrency).
.PHONY: bench-sdk
bench-sdk: env
	$(PY) -m benchmarks.bench_sdk

# The proxy problem: 1 GiB direct (presigned URLs) vs through a naive proxy; bytes, RSS, CPU per service process.
.PHONY: bench-proxy
bench-proxy: env
	$(PY) -m benchmarks.bench_proxy

# The proxy question over a real link: the client in a network namespace behind tbf (300 Mbit/s), direct vs proxies.
.PHONY: bench-proxy-shaped
bench-proxy-shaped: env
	$(PY) -m benchmarks.bench_proxy_shaped

# Where the bytes live: 200 MiB to a near store vs a far store vs a proxy in the far region, each store
# and the client in a network namespace of its own, near and far links shaped by tbf and a delay relay.
.PHONY: bench-regions
bench-regions: env
	$(PY) -m benchmarks.bench_regions

# tus (@tus/server + @tus/s3-store, tus-js-client, pinned from npm) vs the SDK, 1 GiB over the shaped link.
.PHONY: bench-peers-tus
bench-peers-tus: env
	$(PY) -m benchmarks.bench_peers_tus

# GetDownloadUrl at 64 in flight against an echo RPC on the same bootstrap, and the pieces of one call.
.PHONY: bench-download
bench-download: env
	$(PY) -m benchmarks.bench_download

# Multipart CreateUpload with 3,000 multipart uploads open in the bucket vs none, same run.
.PHONY: bench-creates
bench-creates: env
	$(PY) -m benchmarks.bench_creates

# Server CPU per CreateUpload and GetDownloadUrl (vs an echo process), CreateUpload's p99 at half the echo's
# rate (open loop), and the services' CPU for a whole 1 GiB SDK upload.
.PHONY: bench-cost
bench-cost: env
	$(PY) -m benchmarks.bench_cost

# The required path (hash, sniff, scan) on a 1 GiB file vs a minimal GET+SHA-256+INSTREAM script, same run.
.PHONY: bench-pipeline-floor
bench-pipeline-floor: env system-deps
	$(PY) -m benchmarks.bench_pipeline_floor

# CreateUpload with 1,000,000 files in the catalogue vs none, and two metadata+broker pairs vs one (PostgreSQL).
.PHONY: bench-scale
bench-scale: env
	$(PY) -m benchmarks.bench_scale

# Peers in the same run: Uppy Companion 6.2.2 (npm, pinned, temp dir) vs Filestore's create/sign/batch sign, one core each.
.PHONY: bench-peers-companion
bench-peers-companion: env
	$(PY) -m benchmarks.bench_peers_companion

# 300 MiB from a page in Chromium (the browser client, through the face) vs the Python SDK, alternating;
# the bytes and CPU of the face, broker and metadata during the browser's upload.
.PHONY: bench-browser
bench-browser: env system-deps node-deps
	$(PY) -m benchmarks.bench_browser
# Both peers: Companion (signing) and tus (the bytes through a server), each a target of its own.
.PHONY: bench-peers
bench-peers: bench-peers-companion bench-peers-tus

# Every bench-* target in turn (long: run it on a quiet machine); writes docs/benchmarks.md and the
# results block of README.md from their RESULT lines.
.PHONY: bench
bench: env
	$(PY) -m benchmarks.report
