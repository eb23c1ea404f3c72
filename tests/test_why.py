"""`--why`: the kernel model logs its decisions as they happen, and the explanations quote them."""

from __future__ import annotations

import re

import pytest

from cli.main import main
from model.mm import fork
from model.mm.kernel import DecisionLog, Kernel
from model.mm.vmscan import check_references, shrink_inactive_list
from model.proc import show_mem
from model.teach import why
from model.user.malloc import Malloc
from model.user.procps import parse_meminfo
from model.user.workload import run_workload
from model.x86.pte import PAGE_SIZE


def run_text(text: str, tmp_path, **kw):
    path = tmp_path / "t.wl"
    path.write_text(text)
    return run_workload(str(path), **kw)[0]


def test_malloc_why_says_brk_for_the_first_64k_and_mmap_for_128k_once_the_top_is_short(tmp_path):
    """glibc 2.36, as measured on Linux (tests/test_oracle_linux.py): the first call's tcache_init() grows
    the heap by brk(+135168) = page_align(0x290 + M_TOP_PAD + MINSIZE); 64 KiB (nb 65552) is carved from
    that top; 128 KiB (nb 131088) does not fit in the 68960 bytes left, and nb >= M_MMAP_THRESHOLD makes
    sysmalloc() mmap it."""
    k = run_text("boot mem=64M\nspawn app\nmalloc small 64K\nmalloc big 128K\n", tmp_path)
    tcache, small, big = k.decisions.entries["malloc"]
    assert (tcache.outcome, tcache.detail["nb"], tcache.detail["grow"]) == ("brk", 656, 135168)
    assert (small.outcome, small.detail["nb"], small.detail["top"]) == ("heap", 65552, 134512)
    assert (big.outcome, big.detail["nb"], big.detail["top"], big.detail["size"]) == ("mmap", 131088, 68960, 135168)
    text = why.why_malloc(k)
    assert re.search(r"t\.wl:3 app\[100\]: tcache_init\(\), the first call's malloc\(640\): .* brk\(\+135168\)", text)
    assert re.search(r"t\.wl:3 app\[100\]: malloc\(65536\): nb = request2size\(65536\) = 65552: carved from the "
                     r"top chunk \(134512 bytes", text)
    assert re.search(r"t\.wl:4 app\[100\]: malloc\(131072\): nb = request2size\(131072\) = 131088: .* top chunk "
                     r"\(68960 bytes\) .* nb >= mmap_threshold 131072, mmaps it on its own, mmap\(135168\)", text)


def test_malloc_why_shows_the_first_128k_carved_from_the_top_not_mmapped(tmp_path):
    """_int_malloc() uses the top chunk before sysmalloc() looks at the threshold: a first malloc(131072)
    (nb 131088) fits in the 134512-byte top left after tcache_init, so it is a heap chunk."""
    k = run_text("boot mem=64M\nspawn app\nmalloc a 128K\n", tmp_path)
    _, first = k.decisions.entries["malloc"]
    assert (first.outcome, first.detail["nb"], first.detail["top"]) == ("heap", 131088, 134512)
    assert "but _int_malloc() uses the top before sysmalloc() considers mmap" in why.why_malloc(k)


def test_malloc_why_shows_the_dynamic_threshold_that_sent_1m_to_brk(tmp_path):
    """free() of an mmapped chunk larger than mp_.mmap_threshold raises the threshold to its size (up to
    DEFAULT_MMAP_THRESHOLD_MAX), so after freeing 4 MiB a 1 MiB malloc is a heap allocation."""
    k = run_text("boot mem=64M\nspawn app\nmalloc huge 4M\nfree huge\nmalloc again 1M\n", tmp_path)
    outcomes = [(d.outcome, d.detail["threshold"]) for d in k.decisions.entries["malloc"]]
    assert outcomes == [("brk", 131072), ("mmap", 131072), ("munmap", 131072), ("brk", 4198400)]
    text = why.why_malloc(k)
    assert "the dynamic threshold is now 4198400 and trim_threshold 8396800" in text
    assert "nb = request2size(1048576) = 1048592: no free chunk fits" in text
    assert "as nb < mmap_threshold 4198400, grew the top with brk" in text


def test_malloc_why_keeps_the_threshold_for_a_freed_32m_chunk(tmp_path):
    """__libc_free compares chunksize_nomask (size | IS_MMAPPED) with DEFAULT_MMAP_THRESHOLD_MAX: a 32 MiB
    mmapped chunk (nb + 8 page-aligned = 33558528 > 32 MiB) never raises it."""
    k = run_text("boot mem=256M\nspawn app\nmalloc a 32767K\nfree a\n", tmp_path)
    assert k.tasks[100].heap.mmap_threshold == 131072
    assert "mmap_threshold stays 131072 (raised only when chunksize_nomask" in why.why_malloc(k)


def test_malloc_why_groups_a_loop_and_names_the_free_chunk_reuse():
    k, _ = run_workload("small-malloc")
    text = why.why_malloc(k)
    assert re.search(r"small-malloc\.wl:5 app\[100\] \(x\d+\): malloc\(1024\).* carved from the top chunk", text)
    assert "reused a free chunk" in text


def test_memavailable_why_adds_up_to_the_meminfo_value(tmp_path):
    """si_mem_available(): MemFree - totalreserve_pages + pagecache - min(pagecache/2, wmark_low)
    + SReclaimable - min(SReclaimable/2, wmark_low); the explanation prints each term and the sum
    /proc/meminfo shows."""
    k = run_text("boot mem=64M\nfile /f 8M\nspawn app\nread /f\nmalloc a 4M\ntouch a\n", tmp_path)
    m = parse_meminfo(show_mem.meminfo(k))
    t = show_mem.mem_available_terms(k)
    assert t.pagecache * 4 == m["Active(file)"] + m["Inactive(file)"] and t.free * 4 == m["MemFree"]
    assert t.available * 4 == m["MemAvailable"]
    text = why.why_available(k)
    assert f"= {'':<34}{t.available:>9} pages = {m['MemAvailable']} kB" in text
    assert f"+ page cache{'':<24}{t.pagecache:>9} pages" in text
    used4 = m["MemTotal"] - m["MemAvailable"]
    used33 = m["MemTotal"] - m["MemFree"] - m["Buffers"] - m["Cached"] - m["SReclaimable"]
    assert f"= {used4} kB" in text and f"= {used33} kB" in text and f"{used4 - used33:+d} kB" in text


def test_reclaim_why_gives_a_referenced_page_its_second_chance_and_swaps_the_other():
    """shrink_folio_list() / folio_check_references(): a page whose PTE the MMU marked accessed since
    the last scan is activated; an unreferenced anonymous page goes to swap."""
    k = Kernel(32 << 20, 8 << 20)
    t = fork.spawn(k, "app")
    t.heap = Malloc(k, t)
    p = t.heap.malloc(1 << 20)
    t.heap.touch(p, 2 * PAGE_SIZE)
    base = p & ~(PAGE_SIZE - 1)
    pages = [k.pages[t.mm.pt.lookup(va).pa >> 12] for va in (base, base + PAGE_SIZE)]
    for page in pages:
        check_references(k, page)  # aging cleared both A bits
    t.heap.touch(p, 1)  # the first page is used again: the walker sets A
    inactive = k.lru.lists["inactive_anon"]
    for page in reversed(pages):  # the tail, scanned first: the first page, then the second
        inactive.move_to_end(page.pfn, last=False)
    assert shrink_inactive_list(k, "inactive_anon", 2, "direct") == 1
    first, second = list(k.decisions.entries["reclaim"])
    assert (first.outcome, first.detail["young"], first.detail["pfn"]) == ("activate", 1, pages[0].pfn)
    assert (second.outcome, second.detail["young"], second.detail["pfn"]) == ("swap", 0, pages[1].pfn)
    text = why.why_reclaim(k)
    assert f"pfn {pages[0].pfn:#x} anon on inactive_anon (direct): 1 of its 1 PTEs young" in text
    assert f"pfn {pages[1].pfn:#x} anon on inactive_anon (direct): 0 of its 1 PTEs young" in text
    assert re.search(r"^ +1  activated: referenced", text, re.M)
    assert re.search(r"^ +1  swapped out: anonymous and not referenced", text, re.M)


def test_every_logged_reclaim_follows_the_reference_rule():
    k, _ = run_workload("swap-pressure", mem=48 << 20)
    decisions = list(k.decisions.entries["reclaim"]) + [d for (kind, _), d in k.decisions.latest.items()
                                                        if kind == "reclaim"]
    assert {d.outcome for d in decisions} >= {"activate", "swap", "deactivate"}
    for d in decisions:
        referenced = d.detail["young"] > 0 or d.detail["pg_referenced"]
        if d.outcome == "activate":
            assert referenced
        elif d.outcome in ("swap", "drop", "writeback", "rotate"):
            assert not referenced
    assert k.decisions.totals["reclaim", "swap"] == k.vmstat["pswpout"]
    kinds = {d.outcome for d in k.decisions.entries["watermark"]}
    assert "kswapd" in kinds and k.vmstat["kswapd_wake"] == k.decisions.totals["watermark", "kswapd"]


def test_oom_why_lists_every_candidate_and_the_victim_has_the_highest_badness():
    """oom_badness() = rss + swapents + pgtables + oom_score_adj * (totalpages / 1000); -1000 is never
    chosen (OOM_SCORE_ADJ_MIN); select_bad_process() keeps the highest."""
    k, _ = run_workload("oom")
    (d,) = k.decisions.entries["oom"]
    x = d.detail
    assert [c["name"] for c in x["candidates"]] == ["idle", "protected", "hog"]
    killable = [c for c in x["candidates"] if c["points"] is not None]
    assert [c["name"] for c in x["candidates"] if c["points"] is None] == ["protected"]
    victim = max(killable, key=lambda c: c["points"])
    assert x["victim"] == victim["pid"] == 102
    for c in killable:
        assert c["points"] == c["rss"] + c["swapents"] + c["pgtables"] + c["oom_score_adj"] * (x["totalpages"] // 1000)
    text = why.why_oom(k)
    for c in x["candidates"]:
        assert re.search(rf"^ +{c['pid']} {c['name']} ", text, re.M)
    assert re.search(r"^ +102 hog .* <- victim$", text, re.M)
    assert re.search(r"^ +101 protected .*-1000 +- +never$", text, re.M)
    assert "totalpages = RAM 15360 + swap 0 = 15360" in text


def test_oom_score_adj_scales_by_thousandths_of_totalpages(tmp_path):
    """adj *= totalpages / 1000: oom_score_adj 1000 adds as many pages as there are in RAM + swap, so a
    small process is the victim ahead of the one that filled memory."""
    k = run_text("boot mem=64M\nspawn small adj=1000\nmalloc s 1M\ntouch s\nspawn big\nmalloc b 20M\ntouch b\n"
                 "malloc c 20M\ntouch c\nmalloc d 20M\ntouch d\n", tmp_path)
    d, then = k.decisions.entries["oom"]  # killing the small one frees too little: big goes next
    assert then.detail["victim"] == 101
    small = next(c for c in d.detail["candidates"] if c["name"] == "small")
    assert small["adj_pages"] == 1000 * (d.detail["totalpages"] // 1000) and d.detail["victim"] == small["pid"]


def test_the_decision_log_is_bounded_but_its_totals_and_latest_are_not():
    log = DecisionLog(maxlen=4)
    for i in range(10):
        log.record("reclaim", "swap" if i % 2 else "activate", pfn=i)
    assert [d.detail["pfn"] for d in log.entries["reclaim"]] == [6, 7, 8, 9]
    assert log.totals["reclaim", "swap"] == 5 and log.latest["reclaim", "activate"].detail["pfn"] == 8
    assert [d.seq for d in log.since(8)] == [9, 10]


def test_decisions_name_the_workload_line_and_repeat_iteration():
    k, _ = run_workload("oom")
    (d,) = k.decisions.entries["oom"]
    assert d.where == "model/user/workloads/oom.wl:12 (i=2)"
    assert why._held_note(k, "oom") == ""


@pytest.mark.parametrize("argv", [["run", "oom", "--why"], ["free", "oom", "--why"], ["top", "oom", "--why"],
                                  ["vmstat", "oom", "--why"], ["maps", "oom", "idle", "--why"]])
def test_why_adds_the_four_topics_after_any_view(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    heads = re.findall(r"^== why: (\w+) ==$", out, re.M)
    assert heads == ["malloc", "available", "reclaim", "oom"]
    assert "<- victim" in out and "mmap(2101248)" in out
