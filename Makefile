# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# API + embedded worker on http://127.0.0.1:8000 (SQLite job store and broker, ./dcl-data).
run: $(STAMP)
	$(BIN)/dcl serve --embedded

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: the unit tests (no browser, docker, real worker processes or slow marks).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration and not gpu" $(PYTEST_ARGS)

# The property tests with many more examples (a nightly run): never a 5xx, answers as the schema says.
.PHONY: fuzz
fuzz: $(STAMP)
	DCL_FUZZ_EXAMPLES=200 $(BIN)/python -m pytest -q --timeout=3600 tests/service/test_fuzz_api.py $(PYTEST_ARGS)

# The upload file-format fuzz at length (make test runs a few examples of each format).
.PHONY: fuzz-uploads
fuzz-uploads: $(STAMP)
	DCL_FUZZ_EXAMPLES=$${DCL_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest tests/service/test_upload_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache dcl-data
