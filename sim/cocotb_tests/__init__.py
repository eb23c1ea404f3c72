"""The cocotb test modules the regression runs inside the simulator (shipped in the wheel, so that an
installed `mmu sim` needs no source tree).
"""
