"""`mmu explain WORKLOAD VADDR --user`: the page fault followed into the kernel, and the split a page size uses.

The expected paths are Linux's (mm/memory.c): a read of untouched anonymous memory maps the shared zero page
read-only (do_anonymous_page), a write allocates a zeroed frame, a write after fork copies (wp_page_copy) and
flushes the old translation (INVLPG), a file page comes from the disk the first time (a major fault) and from
the page cache after, an address in no VMA is SIGSEGV with SEGV_MAPERR, and an access just below the stack
grows it (expand_stack).  Each is checked against the kernel model's own state, not against the text alone.
"""

import re

import pytest

from cli.main import main
from model.config import MMUConfig
from model.mm.mmap import find_vma
from model.teach.explain import explain
from model.teach.fault_path import follow_fault
from model.user.workload import run_workload
from model.x86.pte import PAGE_SIZE, RW, Access, FaultKind, P, PageSize, addr_mask

WORKLOAD = """\
boot mem=64M
file /data/f 1M
spawn app
mmap anon 64K
mmap f 1M file=/data/f private
mmap g 1M file=/data/f shared
file /data/cold 1M
mmap cold 1M file=/data/cold private
malloc cowbuf 64K
touch cowbuf
fork child
load g 0 4K
"""


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "faults.wl"
    path.write_text(WORKLOAD)
    return path


def _fault(k, task, vaddr, access):
    cfg = MMUConfig()
    ex = explain(k.mem, k.ctrl(task), vaddr, access, True, cfg)
    assert ex.first.response.fault == FaultKind.PAGE, "the workload must leave this address unmapped"
    return follow_fault(k, task, vaddr, access, True, ex.first.response.error_code, cfg)


def _app(path):
    k, _ = run_workload(str(path), seed=0)
    task = next(t for t in k.tasks.values() if t.name == "app")
    return k, task


def _anon_pages(k):
    return sum(1 for page in k.pages.values() if page.kind == "anon")


def _frame(pte):
    return (pte & addr_mask(52)) >> 12


def test_read_of_untouched_anonymous_memory_maps_the_zero_page(workload):
    k, task = _app(workload)
    anon_before = _anon_pages(k)
    fp = _fault(k, task, task.vars["anon"][0], Access.READ)
    assert fp.path == "zero-page"
    assert _frame(fp.leaf_after) == k.zero_pfn and not fp.leaf_after & RW
    assert _anon_pages(k) == anon_before, "the zero page costs no memory (only page-table pages)"
    assert fp.retry.first.response.paddr >> 12 == k.zero_pfn


def test_write_to_untouched_anonymous_memory_allocates_a_page(workload):
    k, task = _app(workload)
    free_before = k.buddy.nr_free_pages
    fp = _fault(k, task, task.vars["anon"][0], Access.WRITE)
    assert fp.path == "demand-zero"
    assert fp.leaf_after & P and fp.leaf_after & RW and _frame(fp.leaf_after) != k.zero_pfn
    taken = free_before - k.buddy.nr_free_pages
    assert taken >= 1
    assert fp.used_kb[1] - fp.used_kb[0] == taken * PAGE_SIZE // 1024, "used grows by every frame taken"
    assert not fp.shootdowns, "a not-present entry cannot be cached: no flush"


def test_write_after_fork_copies_and_flushes_the_old_translation(workload):
    k, task = _app(workload)
    va = task.vars["cowbuf"][0]
    child = next(t for t in k.tasks.values() if t.name == "child")
    fp = _fault(k, task, va, Access.WRITE)
    assert fp.path == "cow"
    assert _frame(fp.leaf_before) != _frame(fp.leaf_after)
    child_pte = child.mm.pt.get_pte(va & ~(PAGE_SIZE - 1))
    assert _frame(child_pte) == _frame(fp.leaf_before), "the child keeps the original frame"
    page = va & ~(PAGE_SIZE - 1)
    assert any(op.name == "FLUSH_VA" and value == page for op, value in fp.shootdowns)


def test_file_page_comes_from_disk_then_from_the_page_cache(workload):
    k, task = _app(workload)
    fp = _fault(k, task, task.vars["cold"][0], Access.READ)  # a file nothing has read yet
    assert fp.path == "file-disk" and fp.major
    # `load g 0 4K` read page 0 of the same file through the other mapping: it is cached now
    fp = _fault(k, task, task.vars["f"][0], Access.READ)
    assert fp.path == "file-cache" and not fp.major


def test_address_in_no_vma_is_sigsegv(workload):
    k, task = _app(workload)
    fp = _fault(k, task, 0x10, Access.READ)
    assert fp.path == "signal" and not task.alive and fp.retry is None
    assert any("segfault at 10" in line and "SEGV_MAPERR" in line for line in fp.dmesg)


def test_access_just_below_the_stack_grows_it(workload):
    k, task = _app(workload)
    stack = max(task.mm.vmas, key=lambda v: v.end)
    va = stack.start - PAGE_SIZE
    fp = _fault(k, task, va, Access.WRITE)
    assert fp.stack_grew == (stack.start + PAGE_SIZE, va) or fp.stack_grew[1] <= va
    assert find_vma(task.mm, va).start <= va
    assert fp.path == "demand-zero"


def test_the_command_prints_the_kernel_side(workload, capsys):
    assert main(["explain", str(workload), "cowbuf", "--access", "w", "--user", "--no-hw"]) == 0
    out = capsys.readouterr().out
    assert "Path: cow (do_wp_page -> wp_page_copy)" in out
    assert re.search(r"Shootdown: FLUSH_VA 0x[0-9a-f]+", out)
    assert "Retried translation" in out


@pytest.mark.parametrize("vaddr, size", [(0x0000_7F12_3461_2345, PageSize.SIZE_2M),
                                         (0xFFFF_8880_1234_5678, PageSize.SIZE_1G)])
def test_superpage_split_has_no_lower_indices_and_a_wide_offset(capsys, vaddr, size):
    """SDM figures 4-9 and 4-10: a 2 MiB page uses vaddr[20:0] as its offset, a 1 GiB page vaddr[29:0]."""
    assert main(["explain", hex(vaddr), "--no-hw"]) == 0
    out = capsys.readouterr().out
    split = out[out.index("Virtual address"):out.index("The PML4 base")]
    offset = vaddr & (size.bytes - 1)
    row = next(line.split() for line in split.splitlines() if "page offset" in line)
    assert row[0] == f"{size.shift - 1}:0" and int(row[3], 2) == offset and len(row[3]) == size.shift
    fields = [line.split()[1] for line in split.splitlines()[2:] if line.strip()]
    assert "PT" not in fields
    assert ("PD" in fields) == (size == PageSize.SIZE_2M)
