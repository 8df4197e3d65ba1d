# Every target bootstraps .venv on a fresh machine. torch comes first and pinned: the machine
# has a local CPU wheel for 2.13.0; any other resolution pulls several GB of CUDA packages.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The demo needs only the package; tests and the harness benchmarks also need the dev extra
# (pytest, ruff, lm-eval, mteb), whose install is about 30 s more on a fresh machine.
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench bench-data lint clean

$(BASE): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.13.0
	$(BIN)/pip install -q --no-compile -c constraints.txt -e .
	@# pip compiles bytecode on one core; both cores here (imports stay fast under PYTHONDONTWRITEBYTECODE)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(BASE)

$(STAMP): $(BASE)
	$(BIN)/pip install -q --no-compile -c constraints.txt -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

demo: $(BASE)
	$(BIN)/twinlm demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/pretrain_throughput.py --rounds 3 --skip-padded

bench-data: $(STAMP)
	$(BIN)/python benchmarks/data_throughput.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
