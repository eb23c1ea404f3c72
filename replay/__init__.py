"""Trace tools: the valgrind lackey reader, replay through the reference MMU, LRU stack distances,
sweeps and their plots. Pure Python + numpy; the hardware replay (`--hw`) lives in `sim/`.
"""
