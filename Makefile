# Entry points: `make sim` (co-simulation regression on Icarus; SIM=verilator for Verilator) and `make test`.
# Both create the virtual environment in .venv/ on first use.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SIM     ?= icarus
SEED    ?=
SEEDS   ?=
TRANSLATIONS ?=
WAVES   ?=
CONFIG  ?=

export SIM SEED SEEDS TRANSLATIONS WAVES MUTANTS JOBS

.PHONY: all install test sim mutants verilog bench clean check-iverilog wheel-check

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

install: $(STAMP)

check-iverilog:
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "error: Icarus Verilog (iverilog) is not installed."; \
	  echo "  Debian/Ubuntu: sudo apt-get install iverilog"; \
	  echo "  Fedora:        sudo dnf install iverilog"; \
	  echo "  macOS:         brew install icarus-verilog"; \
	  exit 1; }

test: $(STAMP) check-iverilog
	$(BIN)/python -m pytest -n auto -q

sim: $(STAMP)
	$(BIN)/mmu sim

# every hardware mutant of sim/mutants.toml on a copy of hw/ (SEED, SEEDS, MUTANTS=a,b, JOBS=N pass through)
mutants: $(STAMP) check-iverilog
	$(BIN)/python -m sim.mutants

verilog: $(STAMP)
	$(BIN)/mmu verilog $(CONFIG)

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

wheel-check: check-iverilog
	.ci/wheel-check

clean:
	rm -rf build sim_build .pytest_cache .hypothesis results.xml
	find . -name __pycache__ -prune -exec rm -rf {} +
