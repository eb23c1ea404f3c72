"""The whole system: the kernel model's processes running on the hardware MMU (Verilog on Icarus).

A workload (``model/user/workload.py``: a named one or a file) runs on a booted
``Kernel`` whose physical memory is the one the DRAM model serves.  Two hooks
of the kernel are pointed at the testbench:

- ``kernel.mmu`` is a ``HardwareMMU``: every load, store and fetch of every
  process is a request on the hardware's translate port (user mode).  A page
  fault in the response goes, with the hardware's error code, to
  ``handle_mm_fault`` (``Kernel.access`` does that and retries on the
  hardware), so SIGSEGV, demand paging, swap-in, COW breaks, stack growth and
  OOM kills all happen on this one path.
- ``HardwareMMU.shootdown`` is in ``kernel.flush_listeners``: every CR3 write
  (context switch, with the PCID) and every flush the kernel issues (munmap,
  mprotect, COW, reclaim, LRU aging clearing A bits, exit) becomes the request
  on the hardware's control port, and the kernel waits for its acknowledge.
  The scoreboard hands each operation to the reference MMU in the order the
  hardware accepted it.

The thread bridge.  The kernel model is synchronous Python and the testbench is
cocotb coroutines, so the workload runs in a thread started with
``cocotb.task.bridge``; ``translate`` and ``shootdown`` block that thread on a
coroutine (``cocotb.task.resume``) that drives the port and awaits the
response or the acknowledge.  cocotb runs one side at a time: while the kernel
thread runs, the simulator does not advance, so the kernel only ever sees a
quiescent MMU.

One ``PhysMem`` is shared by the kernel, the DRAM model and the reference MMU.
The hardware's A/D writes wait in the DRAM model's overlay until the
scoreboard has checked the response they belong to, and are retired from it
then; the kernel runs only after the response, and ``HardwareMMU`` checks that
the overlay is empty each time it hands control back to the kernel, so LRU
aging and writeback read exactly the A and D bits the hardware wrote.

``reference_run`` runs the same workload with the reference MMU (same
configuration) as the translator.  The hardware must be transparent: the same
output, page-fault and shootdown counts, processes, kernel log, MMU counters
and the same physical memory, byte for byte (``outcome`` / ``compare``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass

from cocotb.task import bridge, resume

from model.config import MMUConfig
from model.mm import invariants
from model.mm.kernel import Kernel
from model.reference.ref_mmu import RefMMU
from model.reference.ref_walker import ControlRegs
from model.user import reports
from model.user.workload import Op, Runner, boot_kernel, load, parse, parse_size
from model.x86.pte import PAGE_SIZE, Access, FaultKind
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp
from sim.cosim import CosimEnv
from sim.scoreboard import COMPARED_COUNTERS, fault_class
from sim.transactions import Flags


class FullSystemError(AssertionError):
    """The hardware and the kernel model do not fit together (or are not transparent)."""


# ---------------------------------------------------------------------------
# the workload and its kernel


@dataclass(frozen=True)
class WorkloadSpec:
    """Which workload, and the boot settings a test overrides (None: the workload's own)."""

    workload: str  # a named workload (model/user/workloads/NAME.wl) or a file
    mem: int | None = None
    swap: int | None = None
    pcid: bool | None = None
    aslr: bool | None = None

    @classmethod
    def from_params(cls, p: dict) -> "WorkloadSpec":
        def size(key: str) -> int | None:
            return parse_size(str(p[key]), key) if p.get(key) is not None else None

        return cls(p["workload"], size("mem"), size("swap"), p.get("pcid"), p.get("aslr"))


def boot(spec: WorkloadSpec, seed: int) -> tuple[Kernel, list[Op]]:
    """Boot the kernel the workload asks for (with the spec's overrides) and parse its operations."""
    text, source = load(spec.workload)
    settings, ops = parse(text, source)
    for key in ("pcid", "aslr"):
        if getattr(spec, key) is not None:
            settings[key] = "on" if getattr(spec, key) else "off"
    return boot_kernel(settings, seed=seed, mem=spec.mem, swap=spec.swap, where=source), ops


def kernel_flags(k: Kernel) -> Flags:
    """The control flags the kernel runs with (``Kernel.ctrl``: WP and NXE on, PCIDE as booted)."""
    return Flags(wp=True, nxe=True, smep=False, smap=False, pcide=k.pcide)


@dataclass(slots=True)
class Translation:
    """What ``Kernel.access`` reads from a translation."""

    fault: FaultKind
    error_code: int
    paddr: int


class CountingTranslator:
    """What both translators count: translations and their answers by kind."""

    def __init__(self) -> None:
        self.translations = 0
        self.answers: Counter = Counter()  # ok, not_present, protection, reserved, noncanonical

    def _count(self, fault: int, error_code: int) -> None:
        self.translations += 1
        self.answers[fault_class(fault, error_code)] += 1


class HardwareMMU(CountingTranslator):
    """``kernel.mmu`` and a ``kernel.flush_listeners`` entry that talk to the hardware.

    Both are called in the workload thread and block it until the simulator has
    the answer: the checked response, or the acknowledge of a control operation.
    """

    def __init__(self, env: CosimEnv) -> None:
        super().__init__()
        self.env = env
        self.tb = env.tb
        self.cr3: int | None = None  # the last CR3 written on the control port
        self._translate = resume(self._translate_on_port)
        self._control = resume(self._control_on_port)

    async def _translate_on_port(self, vaddr: int, access: Access):
        return await self.tb.translate(vaddr, access, True)

    async def _control_on_port(self, op: CtlOp, value: int) -> int:
        return await self.tb.control(op, value)

    def translate(self, task, vaddr: int, access: Access) -> Translation:
        want = task.mm.pt.pml4 | task.mm.pcid
        if self.cr3 is None or self.cr3 & ~CR3_NOFLUSH != want:
            loaded = "nothing" if self.cr3 is None else f"{self.cr3 & ~CR3_NOFLUSH:#x}"
            raise FullSystemError(f"pid {task.pid} accesses {vaddr:#x} while the MMU's CR3 is {loaded}, not its "
                                  f"{want:#x}: the kernel did not switch to it" + self._replay())
        resp = self._translate(vaddr, access)
        self._count(resp.fault, resp.error_code)
        self.check_drained(f"the response to pid {task.pid}'s {access.name.lower()} of {vaddr:#x}")
        return Translation(FaultKind(resp.fault), resp.error_code, resp.paddr)

    def shootdown(self, op: CtlOp, value: int) -> None:
        self._control(op, value)
        op = CtlOp(op)
        if op is CtlOp.WRITE_CR3:
            self.cr3 = value
        self.check_drained(f"the acknowledge of {op.name}({value:#x})")

    def check_drained(self, when: str) -> None:
        """Every hardware memory write has been checked and is in PhysMem before the kernel runs again."""
        pending = self.tb.store.pending_writes
        if pending:
            raise FullSystemError(f"after {when}, {len(pending)} hardware write(s) are still unchecked in the DRAM "
                                  f"overlay (first: {pending[0]}): the kernel would read stale A/D bits"
                                  + self._replay())

    def _replay(self) -> str:
        return f"\n  seed: {self.env.seed}\n  replay: {self.env.replay}"


class ReferenceTranslator(CountingTranslator):
    """The reference MMU (TLBs, page-walk cache, walker) as ``kernel.mmu``, fed by the same shootdown hook."""

    def __init__(self, cfg: MMUConfig, kernel: Kernel) -> None:
        super().__init__()
        f = kernel_flags(kernel)
        self.ref = RefMMU(cfg, kernel.mem, ControlRegs(**f.as_dict()))

    def translate(self, task, vaddr: int, access: Access):
        r = self.ref.translate(vaddr, access, True)
        self._count(r.fault, r.error_code)
        return r

    def shootdown(self, op: CtlOp, value: int) -> None:
        self.ref.ctl(op, value)


def install(kernel: Kernel, translator) -> None:
    kernel.mmu = translator
    kernel.flush_listeners.append(translator.shootdown)


# ---------------------------------------------------------------------------
# what a run leaves, and the comparison


def memory_digest(k: Kernel) -> str:
    """A hash of physical memory: every frame that is not all zeros, with its number."""
    h = hashlib.blake2b(digest_size=16)
    zero = bytes(PAGE_SIZE)
    for pfn in range(k.mem.nr_frames):
        frame = k.mem.read_frame(pfn)
        if frame != zero:
            h.update(pfn.to_bytes(8, "little"))
            h.update(frame)
    return h.hexdigest()


def outcome(k: Kernel, output: list[str], translator: CountingTranslator, mmu_counters: dict) -> dict:
    """Everything the run's translator could have changed; equal for the hardware and the reference."""
    return {
        "output": "".join(output),  # the runner's log lines and the workload's reports, as printed
        "vmstat": {name: n for name, n in sorted(k.vmstat.items()) if n},
        "shootdowns": {CtlOp(op).name: n for op, n in sorted(k.flushes.items())},
        "translations": translator.translations,
        "answers": dict(sorted(translator.answers.items())),
        "tasks": [f"{t.pid} {t.name} minflt={t.min_flt} majflt={t.maj_flt}" for t in k.tasks.values()]
        + [f"{t.pid} {t.name} exited {t.exit_signal or 'normally'}: {t.exit_reason}" for t in k.dead],
        "dmesg": list(k.dmesg),
        "mmu_counters": {name: mmu_counters[name] for name in COMPARED_COUNTERS},
        "memory": memory_digest(k),
    }


def compare(hw: dict, ref: dict) -> list[str]:
    """What differs between the hardware run and the reference run (empty: transparent)."""
    diffs = []
    for key in ref:
        a, b = hw[key], ref[key]
        if a == b:
            continue
        if key == "output":
            la, lb = a.splitlines(), b.splitlines()
            i = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
            x = la[i] if i < len(la) else "<end>"
            y = lb[i] if i < len(lb) else "<end>"
            diffs.append(f"output line {i + 1}: hardware {x!r}, reference {y!r}")
        elif isinstance(a, dict):
            keys = sorted(set(a) | set(b))
            diffs.append(f"{key}: " + ", ".join(f"{n} hardware {a.get(n, 0)} reference {b.get(n, 0)}"
                                                  for n in keys if a.get(n, 0) != b.get(n, 0)))
        else:
            diffs.append(f"{key}: hardware {a!r}, reference {b!r}")
    return diffs


def reference_run(spec: WorkloadSpec, seed: int, cfg: MMUConfig) -> dict:
    """The same workload with the reference MMU as the translator."""
    k, ops = boot(spec, seed)
    ref = ReferenceTranslator(cfg, k)
    install(k, ref)
    output: list[str] = []
    Runner(k, output.append).run(ops)
    return outcome(k, output, ref, ref.ref.counters)


class WorkloadEnv(CosimEnv):
    """A co-simulation whose physical memory is a booted kernel's (test parameters: ``WorkloadSpec``)."""

    def physical_memory(self):
        self.spec = WorkloadSpec.from_params(self.params)
        self.kernel, self.ops = boot(self.spec, self.seed)
        if self.kernel.maxphyaddr != self.cfg.maxphyaddr:
            raise FullSystemError(f"configuration {self.config_name}: MAXPHYADDR {self.cfg.maxphyaddr}, the kernel "
                                  f"builds page tables for {self.kernel.maxphyaddr}")
        self.flags0 = kernel_flags(self.kernel)
        return self.kernel.mem


async def run_workload_on_hardware(env: WorkloadEnv) -> None:
    """Run the workload on the hardware, then check it against the kernel's invariants and the reference run."""
    k = env.kernel
    hw = HardwareMMU(env)
    install(k, hw)
    if env.params.get("inject") == "lost_flush_va":
        lose_flush_va(k)
    output: list[str] = []
    runner = Runner(k, output.append)
    env.log.info("full system: workload %s (seed %d), every access through the hardware MMU",
                 env.spec.workload, env.seed)
    wall, cpu, cycle = time.perf_counter(), time.process_time(), env.tb.cycle
    await bridge(runner.run)(env.ops)
    speed = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "cycles": env.tb.cycle - cycle}
    await env.finish()  # quiescent, every response checked, hardware counters equal to the reference's
    hw.check_drained("the end of the workload")
    port = Counter(t.op.name for t in env.tb.ctl.log)
    kernel_ops = Counter({CtlOp(op).name: n for op, n in k.flushes.items()})
    if port != kernel_ops or env.sb.stats.flushes != kernel_ops:
        raise FullSystemError(f"shootdowns: the kernel issued {dict(kernel_ops)}, the control port acknowledged "
                              f"{dict(port)}, the reference MMU was given {dict(env.sb.stats.flushes)}"
                              + hw._replay())
    invariants.check(k)
    mine = outcome(k, output, hw, env.counters)
    ref = reference_run(env.spec, env.seed, env.cfg)
    env.extra["fullsys"] = {
        "workload": env.spec.workload, "translations": hw.translations, "answers": dict(hw.answers),
        "shootdowns": dict(port), "vmstat": mine["vmstat"], "tasks": mine["tasks"], "dmesg": mine["dmesg"],
        "boot": {"pcid": k.pcide, "aslr": k.aslr, "mem": k.mem.size}, "speed": speed,
    }
    if env.params.get("report"):  # the free and top views `mmu sim` prints at the end
        env.extra["reports"] = reports.render(k, ["free", "top"])
    diffs = compare(mine, ref)
    if diffs:
        raise FullSystemError("the hardware is not transparent: the same workload with the reference MMU as "
                              "translator differs:\n  " + "\n  ".join(diffs) + hw._replay())
    check_expectations(env, k)


def lose_flush_va(k: Kernel) -> None:
    """Self-test of the full-system checks: a kernel bug, every INVLPG forgotten (never counted, never sent).

    The hardware and the scoreboard's reference then agree on the stale entries, so the scoreboard is silent;
    the comparison with the reference run of a correct kernel must catch what the stale entries change.
    """
    shootdown = k.shootdown

    def forgetful(op: CtlOp, value: int) -> None:
        if op != CtlOp.FLUSH_VA:
            shootdown(op, value)

    k.shootdown = forgetful


def check_expectations(env: WorkloadEnv, k: Kernel) -> None:
    """What the test says this workload must do: ``expect`` (exact) and ``expect_min`` (at least), keyed by
    vmstat name or ``mmu.COUNTER`` (a hardware counter: the hardware must have done its part, e.g. A/D writes)."""
    def value(key: str) -> int:
        return env.counters[key[4:]] if key.startswith("mmu.") else k.vmstat[key]

    wrong = [f"{key} = {value(key)}, expected {want}" for key, want in env.params.get("expect", {}).items()
             if value(key) != want]
    wrong += [f"{key} = {value(key)}, expected at least {least}"
              for key, least in env.params.get("expect_min", {}).items() if value(key) < least]
    if wrong:
        raise FullSystemError(f"{env.spec.workload} did not do what the test expects: " + "; ".join(wrong)
                              + f"\n  seed: {env.seed}\n  replay: {env.replay}")
