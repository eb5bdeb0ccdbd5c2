# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
comma := ,
# Extras `make run` adds to the runtime: tracking (MLflow) when DCL_MLFLOW_TRACKING_URI is set,
# or any you name (`make run EXTRAS=onnx,timm`). `make test` installs the test extras.
EXTRAS ?= $(if $(DCL_MLFLOW_TRACKING_URI),tracking)
RUN_STAMP := $(VENV)/.installed-run$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))
TEST_STAMP := $(VENV)/.installed-test
# pip shows a progress bar for each download (it is quiet only on a non-terminal).
PIP := $(BIN)/pip install --progress-bar on --disable-pip-version-check

.PHONY: run test test-fast install install-test bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The runtime only: the API, the worker and the engine (torch is most of it: about 2.5 GB of
# wheels from PyPI, CUDA libraries included).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "dcl: installing the runtime into $(VENV) (torch is the big part; the figures are in README.md)"
	$(PIP) -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	touch $@

# Everything the tests use (mlflow, lightly, schemathesis, playwright, onnx, timm...) on top.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed-run  # the runtime is part of it

install: $(RUN_STAMP)
install-test: $(TEST_STAMP)

# API + embedded worker on http://127.0.0.1:8000 (SQLite job store and broker, ./dcl-data).
run: $(RUN_STAMP)
	$(BIN)/dcl serve --embedded

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: the unit tests (no browser, docker, real worker processes or slow marks).
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration and not gpu" $(PYTEST_ARGS)

# The property tests with many more examples (a nightly run): never a 5xx, answers as the schema says.
.PHONY: fuzz
fuzz: $(TEST_STAMP)
	DCL_FUZZ_EXAMPLES=200 $(BIN)/python -m pytest -q --timeout=3600 tests/service/test_fuzz_api.py $(PYTEST_ARGS)

# The upload file-format fuzz at length (make test runs a few examples of each format).
.PHONY: fuzz-uploads
fuzz-uploads: $(TEST_STAMP)
	DCL_FUZZ_EXAMPLES=$${DCL_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest tests/service/test_upload_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache dcl-data
