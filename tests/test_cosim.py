"""The co-simulation regression of `make test`: the tests of sim/regression.py, which `mmu sim` runs too."""

from sim.regression import *  # noqa: F401,F403
