# The two commands of the README: each sets up .venv/ in this clone (once; again only when
# a requirements or pyproject file changes), then does its job.
#
#   make quickstart   train examples/quickstart.yaml (about 4 minutes on 2 CPU cores)
#   make test         run the whole suite (about 9 minutes on 2 CPU cores)
#
# Also: `make quickstart ARGS=--test` (a 10-step smoke run), `make setup` (only the set-up,
# about 3 minutes the first time), `make test-setup` (the test that clones this repository
# and runs the first command's set-up there from nothing; CI runs it after the suite).
#
# Needs python3 (3.10 or newer), make and a C compiler. PyTorch: the CPU build where
# nvidia-smi finds no GPU (a CUDA build is several GB), the default build where it does.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The environment is remade when what it was made from changes: the requirements, the
# pyproject files, and the folders of core/ and native/ (the core's strict editable install
# links each file: a file added or removed there needs the links made again).
INPUTS := requirements.txt pyproject.toml $(wildcard plugins/*/pyproject.toml) \
	$(shell find core native -type d -not -name __pycache__)
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-setup setup clean-venv

quickstart: $(STAMP)
	$(BIN)/slimcore run examples/quickstart.yaml $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Minutes of set-up in a fresh clone, so not part of the suite's run: CI runs it after it.
test-setup: $(STAMP)
	SLIMCORE_SETUP_TEST=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n0 tests/test_setup.py

setup: $(STAMP)

$(STAMP): $(INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "slimcore needs Python 3.10 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "setup: a GPU is here (nvidia-smi): the default PyTorch build"; \
		$(BIN)/python -m pip install --quiet 'torch>=2.6'; \
	else \
		echo "setup: no GPU (nvidia-smi finds none): the CPU build of PyTorch"; \
		$(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet 'torch==2.13.0' \
			--index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e . --config-settings editable_mode=strict
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
