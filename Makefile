# Two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: install install-dev run test bench clean

# torch goes in first and pinned: an unpinned torch pulls several GB of CUDA wheels.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/snakemake --cores $(CORES)
	@echo "Results: $(CURDIR)/results (metrics.csv, fit/, report/index.html)"

test: install-dev
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/fit_bootstrap.py

clean:
	rm -rf results/* logs .snakemake
	touch results/.gitkeep
