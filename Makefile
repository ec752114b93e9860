# Everything Tandem needs is installed from here; `make demo` and `make test` are all a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where the LFW data lies (holds lfw_home/); override on your own machine.
export TANDEM_DATA_HOME ?= $(abspath ../shared/datasets)

.PHONY: install demo test bench-accuracy bench-serving bench-ota clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $@

demo: install
	$(BIN)/tandem demo

test: install
	$(BIN)/pytest

bench-accuracy: install
	$(BIN)/python bench/accuracy.py

# Tandem against BentoML, LitServe and Triton (PyTriton), each peer in its own venv under bench/work/venvs.
# Pass options with ARGS, e.g. make bench-serving ARGS="--quick" or ARGS="--bundle tandem-demo/bundle".
bench-serving: install
	bash bench/serving/setup_peers.sh $(PY)
	$(BIN)/python bench/serving.py $(ARGS)

# Bytes a device downloads (full vs delta), install time, manifest checks/s under wrk (Debian's `wrk`).
bench-ota: install
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python bench/ota.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
