# The two commands a new user needs: `make run` (install + the default pipeline) and `make test`.
VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := .make/installed
DEV   := .make/installed-dev

.PHONY: install run test lint format bench clean-runs

# `make run` installs what the pipeline needs; the test tools and the ONNX exporter come
# with the first `make test` (or `make install`).
$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@mkdir -p $(dir $@) && touch $@

$(DEV): $(STAMP)
	bash scripts/install.sh dev
	@touch $@

install: $(DEV)

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/lowbit show-report reports/digits-resnet20/README.md

# 2 pytest-xdist workers, each on its share of the cores (tests/conftest.py), sharing the
# units of work tests/xdist_groups.py names; TEST_WORKERS=0
# runs the suite in this one process.
TEST_WORKERS ?= 2
test: $(DEV)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check lowbit tests
	$(BIN)/ruff format --check lowbit tests

format: $(DEV)
	$(BIN)/ruff format lowbit tests
	$(BIN)/ruff check --fix lowbit tests

bench: $(STAMP)
	$(BIN)/lowbit bench overhead
	$(BIN)/lowbit bench loader
