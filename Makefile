# Two commands a fresh machine needs (see README): `make devnet` and `make test`.
# Both install what they need first: a virtualenv with shardnet, and the pinned npm
# toolchain (Anvil, Forge, solc) under contracts/node_modules.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup devnet test test-contracts test-python lint bench proto

setup: $(VENV)/.installed contracts/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	npm ci --prefix contracts --no-audit --no-fund
	touch $@

devnet: setup
	$(VENV)/bin/shardnet devnet

test: test-contracts test-python

test-contracts: setup
	npm --prefix contracts run --silent build
	npm --prefix contracts test
	npm --prefix contracts run --silent snapshot:check
	npm --prefix contracts run --silent artifacts:check

test-python: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

bench: setup
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run_all.py $(if $(QUICK),--quick)

proto: setup
	$(PY) -m shardnet.protocol.codegen
