# spinenode: the two commands of the README, and what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# free disk space the install needs (KiB): the venv is about 6.1 GiB, mostly torch's CUDA build
INSTALL_NEEDS_KB := 7340032

.PHONY: demo test install test-deps bench clean

## install the package with its test extras into $(VENV) (torch 2.14.1 from the local wheel cache)
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ "$$free_kb" -lt $(INSTALL_NEEDS_KB) ]; then \
	  echo "WARNING: $$((free_kb / 1048576)) GiB free here; the install needs about 7 GiB (torch's CUDA build is 6 GiB in the venv). pip will fail with 'No space left on device' if it runs out." >&2; \
	fi
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

## everything the tests need, then the whole suite, one test module per worker process
## (pytest-xdist): most tests wait on real peers, so parallel modules share 2 cores well.
## A crashed worker ends the run (--max-worker-restart=0): with --dist loadfile, xdist does
## not hand a crashed worker's remaining modules to its replacement and waits forever.
TEST_WORKERS ?= 2
test: test-deps install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0 --durations=15

## ingest benchmark (node vs DCMTK storescp vs Orthanc); prints a table
bench: test-deps install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache
