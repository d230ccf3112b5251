# spinenode: the two commands of the README, and what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install test-deps bench clean

## install the package with its test extras into $(VENV) (torch 2.14.1 from the local wheel cache)
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## the real peers the tests start: DCMTK, Orthanc, dicom3tools, Redis, PostgreSQL (Debian packages)
test-deps:
	bash scripts/install-test-deps.sh

## main job on the embedded defaults (SQLite, serverless broker): node + built-in PACS + a phantom study
demo: install
	$(BIN)/spinenode demo

## everything the tests need, then the whole suite
test: test-deps install
	$(BIN)/python -m pytest -q

## ingest benchmark (node vs DCMTK storescp vs Orthanc); prints a table
bench: test-deps install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache
