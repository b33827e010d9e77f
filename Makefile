# The two commands of the README: `make demo` and `make test` (and `make docs`).
# All create .venv from nothing with the first python3 >= 3.11 on PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cdtp-installed
# the docs extra on top (Sphinx, numpydoc, myst-nb): `make test` needs it for tests/test_docs.py,
# `make demo` does not, so a fresh `make demo` does not pay for it
DOCS_STAMP := $(VENV)/.cdtp-docs-installed
export MPLBACKEND := Agg

.PHONY: demo test test-slow bench lint docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cdtp needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/cdtp run scenarios/quickstart.toml -o demo-output/quickstart.nc
	$(BIN)/python -m cdtp.study.demo --output-dir demo-output/reference

test: $(DOCS_STAMP)
	$(BIN)/python -m pytest

test-slow: $(DOCS_STAMP)
	$(BIN)/python -m pytest --slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.speed --write
	$(BIN)/python -m benchmarks.batch --write

# the documentation site: docs/_build/html/index.html (warnings are errors, as in the test suite)
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check cdtp tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache docs/_build docs/_generated docs/generated
