"""`mmu trace` against valgrind's cachegrind: an LRU TLB of E entries and W ways is a cache of E*4096 bytes,
W ways and 4096-byte lines, and cachegrind simulates exactly that on the same program run.

Two real programs are compiled and run twice under valgrind: once with lackey (the trace `mmu trace` reads),
once with cachegrind per geometry.  The counts agree exactly once two definitions are lined up:

- cachegrind counts a reference that crosses a line as one access, a miss if either line misses; the MMU
  looks up each page.  The replay's *record misses* (replay/compiled_mmu.py) count per lackey record, so
  they must equal cachegrind's I1 and D1 misses;
- the MMU's DTLB misses also include the D-bit re-walks (docs/reference.md: a write that finds its entry
  clean walks again to set D, as on x86), which a cache does not have.  So DTLB misses = D1 misses + those
  re-walks + second-page misses of crossing records, both counted here on the reference MMU itself (not
  taken from the compiled replay).  This is the "constant handful" of extra data misses: one per page that
  a program reads before it first writes it while the page is still in the TLB.

Needs gcc and valgrind (Debian: apt-get install gcc valgrind).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.config import MMUConfig, Policy, TLBConfig
from model.reference.ref_mmu import RefMMU
from model.x86.pte import Access
from replay.compiled_mmu import (DIRTY_REWALKS, DTLB_RECORD_MISSES, ITLB_RECORD_MISSES, RECORDS, replay_file)
from replay.lackey import read_lackey
from replay.trace_replay import AddressSpace

ROOT = Path(__file__).resolve().parents[1]

SORT_C = r"""
#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(void) {
    enum { N = 4000 };
    int *v = malloc(N * sizeof *v);
    unsigned x = 12345;
    for (int i = 0; i < N; i++) { x = x * 1103515245 + 12345; v[i] = (x >> 8) & 0xFFFFF; }
    qsort(v, N, sizeof *v, cmp);
    long s = 0;
    for (int i = 0; i < N; i += 97) s += v[i];
    printf("%ld\n", s);
    free(v);
    return 0;
}
"""

# (entries, ways): direct-mapped, set-associative and fully associative, up to 64-way LRU (model only).
GEOMETRIES = [(4, 1), (2, 2), (16, 4), (16, 16), (64, 64)]
# Both runs get the same environment (so the same stack) and the same stdout (stdio buffers by its kind).
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is needed for this oracle (Debian: apt-get install {tool})"
    return path


@pytest.fixture(scope="module", params=["listwalk", "qsort"])
def program(request, tmp_path_factory):
    """(executable, lackey trace) of one real program."""
    gcc, valgrind = _need("gcc"), _need("valgrind")
    d = tmp_path_factory.mktemp(request.param)
    src = ROOT / "replay" / "traces" / "listwalk.c" if request.param == "listwalk" else d / "qsort.c"
    if request.param == "qsort":
        src.write_text(SORT_C)
    exe = d / request.param
    subprocess.run([gcc, "-O1", "-o", str(exe), str(src)], check=True)
    trace = d / "trace.lackey"
    subprocess.run([valgrind, "--tool=lackey", "--trace-mem=yes", f"--log-file={trace}", str(exe)], check=True,
                   cwd=d, env=ENV, stdout=subprocess.DEVNULL)
    return exe, trace


def cachegrind(exe: Path, entries: int, ways: int) -> dict[str, int]:
    cache = f"{entries * 4096},{ways},4096"
    out = subprocess.run([_need("valgrind"), "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null",
                          f"--I1={cache}", f"--D1={cache}", "--LL=67108864,16,4096", str(exe)],
                         check=True, cwd=exe.parent, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True).stderr
    counts = {}
    for key, label in (("I refs", r"I\s+refs"), ("D refs", r"D\s+refs"), ("I1", r"I1\s+misses"),
                       ("D1", r"D1\s+misses")):
        counts[key] = int(re.search(label + r":\s+([\d,]+)", out).group(1).replace(",", ""))
    return counts


def lru(entries: int, ways: int) -> MMUConfig:
    return MMUConfig(itlb=TLBConfig(entries, ways, Policy.LRU, model_only=True),
                     dtlb=TLBConfig(entries, ways, Policy.LRU, model_only=True))


def reference_data_misses(trace_path: Path, cfg: MMUConfig) -> tuple[int, int, int]:
    """The DTLB misses of the reference MMU (data accesses only: the DTLB sees nothing else, and the ITLB's
    walks change no leaf's D), and the two ways they exceed a cache's count: D-bit re-walks (a write whose
    lookup finds a matching entry that is not dirty), and misses on the second page of a record that
    already missed on its first."""
    t = read_lackey(trace_path)
    data = np.flatnonzero(t.access != Access.FETCH)
    space = AddressSpace.for_trace(t, cfg)
    mmu = RefMMU(cfg, space.mem, space.ctrl)
    misses = rewalks = second = 0
    missed = False  # the current record has a miss that is not a re-walk
    for vaddr, access, first in zip(t.vaddr[data].tolist(), t.access[data].tolist(), t.first[data].tolist()):
        access = Access(access)
        missed &= not first
        entry = mmu.dtlb.lookup(vaddr, 0)
        rewalk = access is Access.WRITE and entry is not None and not entry.dirty
        if not mmu.translate(vaddr, access, True).tlb_hit:
            misses += 1
            rewalks += rewalk
            second += missed and not rewalk
            missed |= not rewalk
    return misses, rewalks, second


@pytest.mark.parametrize("entries, ways", GEOMETRIES)
def test_mmu_trace_equals_cachegrind_up_to_the_d_bit_rewalks(program, entries, ways):
    exe, trace = program
    cg = cachegrind(exe, entries, ways)
    cfg = lru(entries, ways)
    m = replay_file(trace, cfg).mmu
    assert m.count(RECORDS) == cg["I refs"] + cg["D refs"]  # the two runs made the same references
    assert (m.count(ITLB_RECORD_MISSES), m.count(DTLB_RECORD_MISSES)) == (cg["I1"], cg["D1"])
    misses, rewalks, second = reference_data_misses(trace, cfg)
    assert rewalks > 0 and m.count(DIRTY_REWALKS) == rewalks
    assert m.result().dtlb_misses == misses == cg["D1"] + rewalks + second
    # The fetch side has no D bit: its misses differ from I1 only by a fetch that crosses into a page that
    # misses too, which these programs never do.
    assert m.result().itlb_misses == cg["I1"]
