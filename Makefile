# The two commands of the README: `make demo` and `make test`.
# Both create .venv from nothing with the first python3 >= 3.11 on PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cdtp-installed
export MPLBACKEND := Agg

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cdtp needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cdtp run scenarios/quickstart.toml -o demo-output/quickstart.nc
	$(BIN)/python -m cdtp.demo --output-dir demo-output/reference

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest --slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.speed --write
	$(BIN)/python -m benchmarks.batch --write

lint: $(STAMP)
	$(BIN)/ruff check cdtp tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
