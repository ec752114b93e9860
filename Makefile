# Everything Tandem needs is installed from here; `make demo` and `make test` are all a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where the LFW data lies (holds lfw_home/); override on your own machine.
export TANDEM_DATA_HOME ?= $(abspath ../shared/datasets)

.PHONY: install demo test bench-accuracy clean

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

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
