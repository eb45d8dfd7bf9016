# The two commands a new user needs. Both create .venv when it is missing and are safe to re-run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.birdlens-installed
# torch single-threaded-per-process defaults keep this 2-core CPU from oversubscribing.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet "pip>=23"
	$(BIN)/python -m pip install --quiet -e '.[test,serve,download,lite12,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/birdlens demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

# Style and structure checks, run by CI beside the tests; the docs site must build without a warning
# (broken links and anchors included) into the ignored site/ folder; not --quiet, which hides those warnings.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
