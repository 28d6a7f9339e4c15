# `make demo` and `make test` each build .venv from scratch when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_NUM_THREADS ?= 2

.PHONY: install system-deps demo lint format test test-fast clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the pinned version resolves to the local CPU wheel; an open range pulls CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,deepspeed,plots,audio]"
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

clean:
	rm -rf $(VENV) .cache .ruff_cache outputs *.egg-info
