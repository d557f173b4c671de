# ldetok_lite: two commands on a fresh machine
#   make demo   installs into .venv, then runs the notebook series headless at the tiny preset
#   make test   installs the test extras, lints (ruff, notebook tidiness), runs the whole test suite
#   make lab    opens JupyterLab on the notebooks

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= tiny
OUT    ?= runs/demo
PYTEST_ARGS ?=
# JupyterLab refuses to start as root without --allow-root (containers, CI, cloud machines run as root)
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install install-test demo test lint lab browser-deps bench clean help

help:
	@echo "make demo | make test | make lab | make bench | make clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ldetok_lite)" >/dev/null
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Chromium for the browser test (Debian package; never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the browser test will be skipped)"; fi; }

demo: install
	$(BIN)/ldetok-lite run --preset $(PRESET) --out $(OUT)

lint: install-test
	$(BIN)/ruff check ldetok_lite tests notebooks scripts
	$(BIN)/python scripts/tidy_notebooks.py --check

test: install-test browser-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/ldetok-lite bench tokenizer --model detok_SS --img 64 --batch 8

lab: install
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks

clean:
	rm -rf runs .pytest_cache
