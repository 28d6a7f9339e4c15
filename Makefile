# `make demo` and `make test` each build .venv from scratch when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_NUM_THREADS ?= 2

.PHONY: install system-deps demo lint format test test-fast test-min clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the pinned version resolves to the local CPU wheel; an open range pulls CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,deepspeed,plots,audio,tracking]"
	touch $@

install: $(VENV)/.installed

# espeak-ng synthesises the audio test clips; without it those tests skip with a message.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) \
		|| echo "espeak-ng could not be installed: audio tests will be skipped"

demo: install
	$(PY) examples/demo.py

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

test: install system-deps lint
	$(PY) -m pytest -q tests

test-fast: install system-deps lint
	$(PY) -m pytest -q -m "not slow" tests

# The fast suite at the dependency floors of pyproject.toml, in its own venv: every `>=` floor installed exactly
# (.ci/floors.py), torch at the local CPU wheel, the extras at their newest.
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python

$(MIN_VENV)/.installed: pyproject.toml .ci/floors.py
	test -x $(MIN_PY) || python3 -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q torch==2.13.0
	$(MIN_PY) .ci/floors.py --exclude torch > $(MIN_VENV)/floors.txt
	$(MIN_PY) -m pip install -q -c $(MIN_VENV)/floors.txt -e ".[dev,plots,audio,tracking]"
	$(MIN_PY) .ci/floors.py --exclude torch --check
	touch $@

test-min: $(MIN_VENV)/.installed system-deps
	$(MIN_PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) $(MIN_VENV) .cache .ruff_cache outputs *.egg-info
