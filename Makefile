# The two commands a new user needs: `make run` (install + the default pipeline) and `make test`.
VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := .make/installed

.PHONY: install run test lint format bench clean-runs

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/lowbit show-report reports/digits-resnet20/README.md

# 2 pytest-xdist workers, each on its share of the cores (tests/conftest.py), sharing the
# units of work tests/xdist_groups.py names; TEST_WORKERS=0
# runs the suite in this one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lowbit tests
	$(BIN)/ruff format --check lowbit tests

format: $(STAMP)
	$(BIN)/ruff format lowbit tests
	$(BIN)/ruff check --fix lowbit tests

bench: $(STAMP)
	$(BIN)/lowbit bench overhead
	$(BIN)/lowbit bench loader
