# Entry points: `make sim` (co-simulation regression on Icarus) and `make test` (everything).
# Both create the virtual environment in .venv/ on first use.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SEED    ?=
SEEDS   ?=
WAVES   ?=
CONFIG  ?=

export SEED SEEDS WAVES MUTANTS JOBS

.PHONY: all install test sim mutants verilog bench clean check-iverilog

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

sim: $(STAMP) check-iverilog
	$(BIN)/mmu sim

# every hardware mutant of sim/mutants.toml on a copy of hw/ (SEED, SEEDS, MUTANTS=a,b, JOBS=N pass through)
mutants: $(STAMP) check-iverilog
	$(BIN)/python -m sim.mutants

verilog: $(STAMP)
	$(BIN)/mmu verilog --out build/mmu.v $(CONFIG)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build sim_build .pytest_cache .hypothesis results.xml
	find . -name __pycache__ -prune -exec rm -rf {} +
