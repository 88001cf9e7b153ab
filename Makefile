# One command to set up and run the main job, one to set up and run the tests.
#   make run         # venv + install, then: python evaluator.py initial_program.py
#   make test        # venv + install, then: every test (what CI runs)
#   make test-fast   # no worker, no evaluation (the inner loop; docs/development.md)
#   make test-smoke  # one honest run, one cheat per rejection point, golden run, boundary
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build from the machine's disk here; elsewhere any torch >= 2.4 works (TORCH=torch).
TORCH ?= torch==2.13.0
DATA ?= $(abspath ../shared/data)
export PLASA_DATA_DIR ?= $(DATA)
export PLASA_TOKENIZER_DIR ?= $(DATA)

.PHONY: setup run test test-fast test-smoke speed clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,plot]"
	touch $@

run: setup
	$(PY) evaluator.py initial_program.py

test: setup
	$(PY) -m pytest -q -n 2

test-fast: setup
	PLASA_TEST_TIER=fast $(PY) -m pytest -q -n 2 -m "not evaluation"

test-smoke: setup
	$(PY) -m pytest -q -n 2 -m smoke

# The original benchmark to compare with, and a python that can run it (torchtune 0.6.1 and
# torchao 0.10.0, in a venv of its own; see ../shared/original/PROVENANCE.md).
ORIGINAL ?= $(abspath ../shared/original/plasa_attention)
ORIGINAL_PYTHON ?=

speed: setup
	$(PY) measure/speed.py
	@if [ -n "$(ORIGINAL_PYTHON)" ]; then \
		$(PY) measure/versus_original.py --original "$(ORIGINAL)" --original-python "$(ORIGINAL_PYTHON)"; \
	else echo "versus the original loop: skipped (make speed ORIGINAL_PYTHON=/path/to/venv/bin/python)"; fi

clean:
	rm -rf $(VENV) build *.egg-info
