# The two commands of the README: each sets up .venv/ in this clone (once; again only when
# what it was made from changes), then does its job.
#
#   make quickstart   train examples/quickstart.yaml (about 4 minutes on 2 CPU cores)
#   make test         run the whole suite (about 7 minutes on 2 CPU cores)
#
# `make quickstart` installs what training needs (requirements.txt: the core and the three
# plugin distributions); `make test` adds the test tools, the trackers and transformers
# (requirements-test.txt). Also: `make quickstart ARGS=--test` (a 10-step smoke run, in
# runs/quickstart-test/), `make setup` and `make setup-test` (only the set-ups), `make
# test-slow` (the slow tier, which CI runs after the suite: the test that clones this
# repository and runs the first command's set-up there from nothing, the tests that time
# processes against each other, install generated plugins with pip, run most torchrun jobs
# or index lm-evaluation-harness's tasks; `make test-setup` is its old name).
#
# Needs python3 (3.10 or newer), make and a C compiler. PyTorch: the CPU build where
# nvidia-smi finds no GPU (a CUDA build is several GB), the default build where it does.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --progress-bar on --disable-pip-version-check
# An environment is remade when what it was made from changes: the requirements, the
# pyproject files, and the folders of core/ and native/ (the core's strict editable install
# links each file: a file added or removed there needs the links made again).
INPUTS := requirements.txt pyproject.toml $(wildcard plugins/*/pyproject.toml) \
	$(shell find core native -type d -not -name __pycache__)
STAMP := $(VENV)/.installed
# The core again as a strict editable install (python -m slimcore from any folder): last in
# each set-up, since the `-e .` of requirements.txt (which requirements-test.txt includes)
# puts back the default editable finder.
define STRICT_CORE
@echo "setup: the core again as a strict editable install (python -m slimcore from any folder)"
$(PIP) --quiet --no-deps -e . --config-settings editable_mode=strict
endef
TEST_STAMP := $(VENV)/.installed-test

.PHONY: quickstart test test-slow test-setup setup setup-test clean-venv

quickstart: $(STAMP)
	$(BIN)/slimcore run examples/quickstart.yaml $(ARGS)

test: $(TEST_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Tests marked slow (set-up in a fresh clone, timing across processes): one at a time, so
# none competes with another for the CPU. CI runs them after the suite.
test-slow: $(TEST_STAMP)
	SLIMCORE_SLOW_TESTS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n0 -m slow

test-setup: test-slow  # its name until 0.2, when the slow tier was one test

setup: $(STAMP)

setup-test: $(TEST_STAMP)

$(STAMP): $(INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "slimcore needs Python 3.10 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 2; }
	@test -x $(BIN)/python || { echo "setup: a virtual environment in $(VENV)/"; \
		$(PYTHON) -m venv $(VENV); }
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "setup: a GPU is here (nvidia-smi): the default PyTorch build (several GB)"; \
		$(PIP) 'torch>=2.6'; \
	else \
		echo "setup: no GPU (nvidia-smi finds none): the CPU build of PyTorch"; \
		$(PIP) 'torch==2.13.0+cpu' 2>/dev/null || \
		$(PIP) 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu; \
	fi
	@echo "setup: slimcore and its three plugin distributions, with what they need (requirements.txt)"
	$(PIP) -r requirements.txt
	$(STRICT_CORE)
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.txt
	@echo "setup: the test tools, the trackers' extras and transformers (requirements-test.txt)"
	$(PIP) -r requirements-test.txt
	$(STRICT_CORE)
	@touch $(TEST_STAMP)

clean-venv:
	rm -rf $(VENV)
