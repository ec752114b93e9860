# Everything Tandem needs is installed from here; `make demo` and `make test` are all a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Workers for the tests outside Ray (pytest-xdist): one a core by default; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
# LiteRT's converter and its venv (below, at make install).
LITERT_VERSION := 0.10.0
# Google's quantiser of .tflite files (LiteRT int8: tandem/export/litert_convert.py); litert-torch needs 0.10.*.
AEQ_VERSION := 0.10.0
LITERT_VENV := .venv-litert
TORCH_PIN := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
# The stamp names the versions it was made with: the venv is made again when one changes, not on every
# edit of pyproject.toml (its other lines are not the converter's business).
LITERT_STAMP := $(LITERT_VENV)/.installed-$(LITERT_VERSION)-aeq-$(AEQ_VERSION)-$(subst ==,-,$(TORCH_PIN))
# Where the LFW data lies (holds lfw_home/); override on your own machine.
export TANDEM_DATA_HOME ?= $(abspath ../shared/datasets)

.PHONY: install check-data need-data lfw chromium demo celebmatch test test-ray lint bench-accuracy bench-serving bench-ota bench-device bench-hardening bench-soak bench-security bench-placement bench-scale clean

# The browser app's sources; its build lands in src/tandem/webapp, which `tandem serve` serves at /app/.
WEB_SRC := $(wildcard web/src/*.js web/src/*.json web/src/*.css web/public/*.js web/public/*.svg) web/index.html web/vite.config.js \
	web/scripts/copy-assets.mjs web/scripts/opencv-csp.mjs web/package.json web/package-lock.json

# LFW is looked for before anything is installed: `make demo`, `make celebmatch` and `make test` need it
# (need-data stops there), `make install` only says so (check-data).
LFW_DIR = $(TANDEM_DATA_HOME)/lfw_home/lfw_funneled
define NO_LFW
LFW (Labeled Faces in the Wild) is not at $(LFW_DIR).
  If you have it elsewhere: make ... TANDEM_DATA_HOME=/the/folder/that/holds/lfw_home
  To download it there (about 230 MB; tandem data fetch lfw): make install && make lfw
endef
export NO_LFW

check-data:
	@test -d "$(LFW_DIR)" || { echo "$$NO_LFW" >&2; echo "(installing anyway: the demo and the tests need it)" >&2; }

need-data:
	@test -d "$(LFW_DIR)" || { echo "$$NO_LFW" >&2; exit 2; }

# Downloads LFW into TANDEM_DATA_HOME the way scikit-learn lays it out (needs internet): `tandem data fetch lfw`.
lfw: $(VENV)/.installed
	$(BIN)/tandem data fetch lfw --to "$(TANDEM_DATA_HOME)"

install: check-data $(VENV)/.installed $(LITERT_STAMP) src/tandem/webapp/index.html chromium

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[cli,train,serve,dev,ray,teacher,ann,litert,executorch,coreml]'
	# MTCNN's landmark weights (tandem.models.onet reads the file); the package's own pins are not ours.
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

# LiteRT's converter (litert-torch, formerly ai-edge-torch) lives in a venv of its own beside .venv: through
# xdsl it pins typing-extensions<4.13, which would take pydantic back below what Tandem needs. It gets the
# project's torch (the pin read from pyproject.toml), and `tandem export --formats litert` runs it on the
# torch.export program of the checkpoint (tandem/export/litert_convert.py). About 75 s and 2.1 GB here.
$(LITERT_STAMP):
	rm -rf $(LITERT_VENV)
	$(PY) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/pip install --upgrade --quiet pip
	$(LITERT_VENV)/bin/pip install --quiet '$(TORCH_PIN)' 'litert-torch==$(LITERT_VERSION)' 'ai-edge-quantizer==$(AEQ_VERSION)'
	touch $@

# npm ci installs exactly the lock file's versions; the Haar cascade comes from the Python opencv
# package, so the browser finds faces with the very file the server uses.
src/tandem/webapp/index.html: $(WEB_SRC) $(VENV)/.installed
	cd web && npm ci --no-audit --no-fund --loglevel=error && \
		HAAR_CASCADE="$$(../$(BIN)/python -c 'import cv2; print(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")')" npm run build

# The browser tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

demo: need-data install
	$(BIN)/tandem demo

# celebmatch's full face embedding (about 12 minutes on 2 cores; the demo's is a 3-minute sketch):
# dlib's face ResNet fine-tuned on every LFW person outside the held-out verification folds,
# exported to bundles/celebmatch and enrolled with the LFW people who have at least 10 photos.
celebmatch: need-data install
	$(BIN)/tandem train --data lfw --objective embed --epochs 2 --name celebmatch --out runs/celebmatch $$( [ -f runs/celebmatch/checkpoint.pt ] && echo --resume )
	$(BIN)/tandem export runs/celebmatch --out bundles/celebmatch
	$(BIN)/tandem celebmatch enroll bundles/celebmatch --data lfw --min-faces 10

# `make lint` comes first: a style, layering or type error fails `make test` before any test runs.
# Ray's tests run in their own process: a Ray driver leaves state behind (its event loop among
# it) that later tests in the same interpreter would trip over. Both parts always run; the status
# is the first failure's.
test: need-data install lint
	@$(BIN)/pytest -m "not ray" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; first=$$?; \
	$(BIN)/pytest -m ray; second=$$?; \
	if [ $$first -ne 0 ]; then echo "make test: the tests outside Ray failed (pytest exit $$first)" >&2; exit $$first; fi; \
	exit $$second

# Only the tests that start a local Ray cluster (Ray Train, Ray Serve): a few minutes on 2 cores.
test-ray: need-data install
	$(BIN)/pytest -m ray

# The code's own checks: ruff, the layering contracts (lint-imports: [tool.importlinter] in pyproject.toml) and
# the types (mypy: strict on protocol, bundle, device, security, delta). All three run; any failure fails it.
# It installs first, so a clean checkout (CI's) has the tools.
lint: install
	@status=0; \
	$(BIN)/ruff check src tests bench || status=1; \
	$(BIN)/lint-imports || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

bench-accuracy: install
	$(BIN)/python bench/accuracy.py

# Tandem against BentoML, LitServe, Triton (PyTriton), KServe and MLServer, each peer in its own venv under
# bench/work/venvs.
# Pass options with ARGS, e.g. make bench-serving ARGS="--quick" or ARGS="--bundle tandem-demo/bundle".
# Every cell is also driven by wrk (Debian's `wrk`), the results' `wrk` section.
bench-serving: install
	command -v wrk >/dev/null || apt-get install -y wrk
	bash bench/serving/setup_peers.sh $(PY)
	$(BIN)/python bench/serving.py $(ARGS)

# Bytes a device downloads (full vs delta), install time, manifest checks/s under wrk (Debian's `wrk`).
bench-ota: install
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python bench/ota.py $(ARGS)

# The device SDK's cost over a bare ONNX Runtime run, and its failover time with the server down.
bench-device: install
	$(BIN)/python bench/device.py $(ARGS)

# Device, cloud, best split and auto on emulated 2G..Wi-Fi links, measured against the advisor's predictions.
bench-placement: install
	$(BIN)/python bench/placement.py $(ARGS)

# Parser and API fuzzing (tests/fuzz) at a larger budget and the fault-injection scenarios
# (tests/faults) repeated: bench/results/hardening.json. ARGS="--parts api,faults" runs some parts only.
bench-hardening: install
	$(BIN)/python bench/hardening.py $(ARGS)

# A real `tandem serve` at ~80% of its measured capacity with JSON, binary, image and OTA requests for
# 10 minutes: errors, p99 drift, RSS growth (bench/results/soak.json, merged into hardening.json).
# ARGS="--minutes 1" for a short run.
bench-soak: install
	$(BIN)/python bench/soak.py $(ARGS)

# The red-team suite (tests/security: every attack of issue 14 against a real `tandem serve` and Chromium),
# case by case, with the legitimate p99 under 1,100 half-open sockets: bench/results/security.json.
bench-security: install
	$(BIN)/python bench/security.py $(ARGS)

# Ray Train and Ray Serve against the plain paths on this machine: training images/s (1 and 2 workers)
# and serving answers/s at concurrency 16 (1 and 2 replicas); writes bench/results/scale.json.
# ARGS="--quick" for a smoke run, ARGS="--device cuda" for training on a GPU.
bench-scale: install
	$(BIN)/python bench/scale.py $(ARGS)

clean:
	rm -rf $(VENV) $(LITERT_VENV) build src/*.egg-info .pytest_cache src/tandem/webapp web/node_modules
