"""Full-system co-simulation: the kernel model's workloads and a real program's trace on the hardware MMU.

``workload``: a workload (``MMU_COSIM_PARAMS``: workload, mem, swap, pcid, aslr, expect, expect_min) runs
with every access translated by the Verilog MMU and every shootdown sent to its control port
(sim/fullsys.py).  ``trace``: a lackey trace (params: trace, limit) through the Verilog MMU
(sim/trace_cosim.py).  The scoreboard checks every response against the reference MMU in both.
"""

from __future__ import annotations

from sim.cosim import cosim_test
from sim.fullsys import WorkloadEnv, run_workload_on_hardware
from sim.trace_cosim import TraceEnv, replay_on_hardware


@cosim_test(env_class=WorkloadEnv)
async def workload(env: WorkloadEnv):
    """A kernel workload with the hardware MMU as every process's translator."""
    await run_workload_on_hardware(env)


@cosim_test(env_class=TraceEnv)
async def trace(env: TraceEnv):
    """Every page access of a trace, pipelined, through the hardware MMU."""
    await replay_on_hardware(env)
