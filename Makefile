# Two commands for a fresh machine with Python 3.11:
#   make demo   # creates .venv, pulls Qwen2.5-Coder-0.5B, runs the demo pipeline on the shipped organism
#   make test   # creates .venv, runs the test suite (the bounded CI set)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
INTEROP := steering-vectors==0.12.2 repeng==0.4.0

.PHONY: venv demo test test-all test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build; an unpinned torch pulls several GB of CUDA.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# interop packages (tested with the real ones): --no-deps, their metadata pins transformers<5 / numpy<2
	$(BIN)/python -m pip install --quiet --no-deps $(INTEROP)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/em-interp models pull qwen2.5-coder-0.5b-instruct+risky-financial
	$(BIN)/em-interp run experiments/demo.yaml

test: $(STAMP)
	@# Headless Chromium for the report rendering test (skipped cleanly if this fails).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: render test will skip"; }
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache
