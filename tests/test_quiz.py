"""`mmu quiz`: seeds name questions, and every worked answer is re-derived here from the printed question alone.

The solvers below are deliberately small and written from the rules (SDM 4.5-4.7, docs/reference.md,
mm/oom_kill.c, procps free), sharing no code with the model, so a wrong model answer cannot pass.
"""

import math
import re

import pytest

from cli.main import main
from model.teach import quiz

FAST = ("translate", "tlb", "buddy", "free")


def cli(capsys, *argv):
    rc = main(["quiz", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- seeds ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", list(quiz.TOPICS))
def test_same_seed_same_question_and_answer(topic):
    a, b = quiz.make(topic, 7), quiz.make(topic, 7)
    assert (a.question, a.worked, a.answer) == (b.question, b.worked, b.answer)


@pytest.mark.parametrize("topic", FAST)
def test_different_seeds_different_questions(topic):
    assert len({quiz.make(topic, seed).question for seed in range(6)}) == 6


def test_different_seeds_different_oom_questions():
    assert quiz.make("oom", 1).question != quiz.make("oom", 2).question


def test_cli_question_then_worked_answer(capsys):
    rc, plain, _ = cli(capsys, "translate", "-s", "5")
    rc_c, worked, _ = cli(capsys, "translate", "-s", "5", "-c")
    assert rc == rc_c == 0
    assert worked.startswith(plain.rsplit("\n(mmu quiz", 1)[0])  # -c repeats the same question first
    assert "Answer:" not in plain and re.search(r"^Answer: ", worked, re.M)


def test_cli_list_and_errors(capsys):
    rc, out, _ = cli(capsys, "--list")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == list(quiz.TOPICS)
    rc, out, err = cli(capsys, "nonsense")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "nonsense" in err


# --- translate: an independent 4-level walk over the dumped entries ---------------------------------------

def solve_translate(question: str) -> str:
    cr3 = int(re.search(r"CR3 = (0x[0-9a-f]+)", question).group(1), 16)
    flags = {k: v == "1" for k, v in re.findall(r"(WP|NXE|SMEP|SMAP)=(\d)", question)}
    mem = {int(a, 16): int(v, 16) for a, v in re.findall(r"^  (0x[0-9a-f]{8})  (0x[0-9a-f]{16})$", question, re.M)}
    mode, kind, va = re.search(r"A (user|supervisor) (read|write|instruction fetch) of virtual address "
                               r"(0x[0-9a-f]+)", question).groups()
    va, user, write, fetch = int(va, 16), mode == "user", kind == "write", kind == "instruction fetch"
    if va >> 47 not in (0, 0x1FFFF):
        return "#GP"
    code = (2 if write else 0) | (4 if user else 0) | (16 if fetch else 0)
    table, rw, us, nx = cr3 & 0xFF_FFFF_F000, True, True, False
    for level in (4, 3, 2, 1):
        entry = mem.get(table + 8 * (va >> (12 + 9 * (level - 1)) & 0x1FF), 0)
        if not entry & 1:
            return f"#PF {code:#x}"
        leaf = level == 1 or (level in (2, 3) and entry >> 7 & 1)
        reserved = entry & (((1 << 52) - 1) ^ ((1 << 40) - 1))
        if level == 4 and entry >> 7 & 1 or leaf and level == 2 and entry & 0x1FE000:
            reserved = 1
        if reserved:
            return f"#PF {code | 1 | 8:#x}"
        rw, us, nx = rw and entry >> 1 & 1, us and entry >> 2 & 1, nx or entry >> 63
        if leaf:
            break
        table = entry & 0xFF_FFFF_F000
    if fetch:
        ok = not nx and (us if user else not (flags["SMEP"] and us))
    elif user:
        ok = us and (rw or not write)
    else:
        ok = not (flags["SMAP"] and us) and (rw or not write or not flags["WP"])
    if not ok:
        return f"#PF {code | 1:#x}"
    shift = 12 + 9 * (level - 1)
    return f"{(entry & 0xFF_FFFF_F000) >> shift << shift | va & ((1 << shift) - 1):#x}"


def model_translate(answer: str) -> str:
    if "#GP" in answer:
        return "#GP"
    m = re.search(r"error code (0x[0-9a-f]+)", answer)
    return f"#PF {int(m.group(1), 16):#x}" if m else re.search(r"physical address (0x[0-9a-f]+)", answer).group(1)


def test_translate_answers_match_an_independent_walk():
    kinds = set()
    for seed in range(80):
        q = quiz.make("translate", seed)
        mine = solve_translate(q.question)
        assert model_translate(q.answer) == mine, (seed, q.answer, mine)
        kinds.add(mine.split()[0] if mine.startswith("#") else "paddr")
    assert kinds == {"#GP", "#PF", "paddr"}  # the seeds reach every kind of answer


# --- tlb: an independent set-associative TLB with the four policies ------------------------------------------

def solve_tlb(question: str) -> list[int]:
    entries, sets, ways = map(int, re.search(r"A TLB with (\d+) entries, .*\((\d+) sets? of (\d+) ways?\)",
                                              question).groups())
    policy = re.search(r"^Policy: (LRU|tree pseudo-LRU|FIFO|random|none)", question, re.M).group(1)
    lfsr = re.search(r"seeded with (0x[0-9a-f]+)", question)
    state = int(lfsr.group(1), 16) if lfsr else 0
    vpns = [int(v, 16) >> 12 for v in re.findall(r"^  \d+\s+(0x[0-9a-f]{8})$", question, re.M)]
    tags = [[None] * ways for _ in range(sets)]
    used = [[0] * ways for _ in range(sets)]  # LRU: time of last use
    tree = [[0] * ways for _ in range(sets)]  # PLRU node bits, heap-numbered
    fifo = [0] * sets
    hits = []

    def plru_touch(s, way):
        node = ways + way
        while node > 1:
            tree[s][node >> 1] = 1 if node % 2 == 0 else 0  # point away from the touched child
            node >>= 1

    for t, vpn in enumerate(vpns, start=1):
        s = vpn % sets
        if vpn in tags[s]:
            way = tags[s].index(vpn)
            hits.append(t)
        elif None in tags[s]:
            way = tags[s].index(None)
        elif policy == "LRU":
            way = used[s].index(min(used[s]))
        elif policy == "tree pseudo-LRU":
            node = 1
            while node < ways:
                node = 2 * node + tree[s][node]
            way = node - ways
        elif policy == "FIFO":
            way, fifo[s] = fifo[s], (fifo[s] + 1) % ways
        else:
            state = state >> 1 ^ (0xB400 if state & 1 else 0)
            way = state % ways
        tags[s][way] = vpn
        used[s][way] = t
        if ways > 1:
            plru_touch(s, way)
    return hits


def test_tlb_answers_match_an_independent_tlb():
    policies = set()
    for seed in range(60):
        q = quiz.make("tlb", seed)
        hits = [int(h) for h in re.search(r"hits?: ([\d, ]+) \(", q.answer).group(1).split(", ")]
        assert hits == solve_tlb(q.question), (seed, q.answer)
        policies.add(re.search(r"^Policy: (\S+)", q.question, re.M).group(1))
    assert policies >= {"LRU:", "tree", "FIFO:", "random:"}


# --- buddy: an independent LIFO buddy allocator --------------------------------------------------------------

def solve_buddy(question: str) -> str:
    nr = int(re.search(r"A zone of (\d+) pages", question).group(1))
    top = nr.bit_length() - 1
    lists = [[] for _ in range(top + 1)]
    lists[top].append(0)
    blocks, result = {}, []
    for step in re.findall(r"^  \d+\. (.+)$", question, re.M):
        m = re.match(r"(\w) = alloc order (\d)", step)
        if m:
            order = int(m.group(2))
            k = next(o for o in range(order, top + 1) if lists[o])
            pfn = lists[k].pop(0)
            while k > order:
                k -= 1
                lists[k].insert(0, pfn + (1 << k))
            blocks[m.group(1)] = (pfn, order)
            result.append(f"{m.group(1)}={pfn}")
            continue
        pfn, order = blocks.pop(step.split()[1])
        while order < top and pfn ^ (1 << order) in lists[order]:
            lists[order].remove(pfn ^ (1 << order))
            pfn &= ~(1 << order)
            order += 1
        lists[order].insert(0, pfn)
    shown = "  ".join(f"{o}:[{' '.join(map(str, pfns))}]" for o, pfns in enumerate(lists))
    return f"Answer: {' '.join(result)}; free lists {shown}"


def test_buddy_answers_match_an_independent_allocator():
    for seed in range(60):
        q = quiz.make("buddy", seed)
        assert q.answer == solve_buddy(q.question), seed


# --- oom: oom_badness from the printed process table ----------------------------------------------------------

def solve_oom(question: str) -> str:
    ram, swap = map(int, re.search(r"totalram_pages = (\d+) and total_swap_pages = (\d+)", question).groups())
    chosen, best = None, None
    for row in re.findall(r"^\[\s*(\d+)\]\s+(.*)$", question, re.M):
        pid, cells = int(row[0]), row[1].split()
        rss, pgtables_bytes, swapents, adj, name = int(cells[3]), int(cells[7]), int(cells[8]), int(cells[9]), cells[10]
        if adj == -1000:
            continue
        points = rss + swapents + pgtables_bytes // 4096 + adj * ((ram + swap) // 1000)
        if best is None or points >= best:  # a tie goes to the later task (oom_evaluate_task)
            chosen, best = f"pid {pid} ({name})", points
    return f"Answer: {chosen}" if chosen else "Answer: none: every process is unkillable"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_oom_victim_is_the_highest_badness(seed):
    q = quiz.make("oom", seed)
    assert q.answer == solve_oom(q.question)
    assert "mm/oom_kill.c" in q.worked


def test_an_oom_question_with_every_process_unkillable_ends_in_the_panic():
    q = quiz.make("oom", 499)  # three processes, all at oom_score_adj -1000
    assert q.answer == solve_oom(q.question) == "Answer: none: every process is unkillable"
    assert "Kernel panic - not syncing: System is deadlocked on memory" in q.worked


def test_oom_questions_involve_swap():
    q = quiz.make("oom", 1)
    assert any(int(row.split()[9]) > 0 for row in re.findall(r"^\[\s*\d+\]\s+.*$", q.question, re.M))


# --- free: procps arithmetic, si_mem_available, page conservation, demand paging ---------------------------------

def test_free_answers_follow_meminfo_arithmetic():
    for seed in range(12):
        q = quiz.make("free", seed)
        heads, values = [line.split() for line in q.worked.split("Final /proc/meminfo (kB):\n")[1].splitlines()[:2]]
        m = dict(zip(heads, map(int, values)))
        used, free, cache = map(int, re.search(r"used (\d+) KiB, free (\d+) KiB, buff/cache (\d+) KiB",
                                               q.answer).groups())
        assert used == m["MemTotal"] - m["MemAvailable"]
        assert free == m["MemFree"]
        assert cache == m["Buffers"] + m["Cached"] + m["SReclaimable"]
        low, high = map(int, re.search(r"watermarks low (\d+), high (\d+)", q.worked).groups())
        pagecache, sreclaim = (m["Active(file)"] + m["Inactive(file)"]) // 4, m["SReclaimable"] // 4
        available = m["MemFree"] // 4 - high + pagecache - min(pagecache // 2, low) + sreclaim - min(sreclaim // 2, low)
        assert m["MemAvailable"] == 4 * available  # mm/show_mem.c si_mem_available()


def test_free_trace_conserves_pages_and_pages_in_on_touch():
    """Every kB that leaves MemFree shows up as anon pages, page tables or slab; touching an mmapped chunk
    of L bytes (user pointer 16 bytes into a page-aligned chunk) faults in exactly ceil((16 + L) / 4096) pages."""
    checked = 0
    for seed in range(12):
        q = quiz.make("free", seed)
        rows = [line.split() for line in q.worked.splitlines()
                if re.match(r"^  (\(start\)|malloc \w|touch \w|free \w) ", line)]
        start, ops = rows[0], rows[1:]
        assert int(start[-1]) - int(ops[-1][-1]) == sum(int(r[-4]) + int(r[-3]) + int(r[-2]) for r in ops)
        mapped, touched = {}, set()
        for r in ops:
            if r[0] == "malloc":
                mapped[r[1]] = int(r[2][:-1]) * 1024 if r[3] == "mmap" else None
            elif r[0] == "touch" and mapped.get(r[1]) and r[1] not in touched:
                length = int(r[3][:-1]) * 1024 if r[2] == "0" else mapped[r[1]]
                assert int(r[-4]) == 4 * math.ceil((16 + length) / 4096), (seed, r)
                touched.add(r[1])
                checked += 1
    assert checked > 5


# --- knobs: one parameter fixed, the rest from the seed, the answer still the independent solver's ---------------

@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("entries, ways, policy", [(8, 2, "lru"), (16, 4, "plru"), (4, 4, "fifo"), (8, 8, "random"),
                                                   (4, 1, "lru")])
def test_tlb_knobs_set_the_geometry_and_the_answers_still_match(seed, entries, ways, policy):
    q = quiz.make("tlb", seed, {"entries": str(entries), "ways": str(ways), "policy": policy, "accesses": "20"})
    sets = entries // ways
    assert f"A TLB with {entries} entries" in q.question and f"({sets} set{'s' if sets > 1 else ''} of {ways} way" \
        in q.question
    assert len(re.findall(r"^  \d+\s+0x[0-9a-f]{8}$", q.question, re.M)) == 20
    hits = re.search(r"hits?: ([\d, ]*) \(", q.answer)
    mine = solve_tlb(q.question)
    assert [int(h) for h in hits.group(1).split(", ")] == mine if mine else "0 hits" in q.answer


def test_a_knob_leaves_the_rest_of_the_seed_alone():
    plain = quiz.make("tlb", 5)
    policy = re.search(r"^Policy: (\S+)", plain.question, re.M).group(1).rstrip(":").lower()
    same = {"lru": "lru", "tree": "plru", "fifo": "fifo", "random": "random"}.get(policy)
    if same:  # naming the policy the seed drew anyway gives the very same question
        assert quiz.make("tlb", 5, {"policy": same}).question == plain.question


@pytest.mark.parametrize("seed", range(10))
def test_buddy_knobs_set_zone_and_length_and_the_answers_still_match(seed):
    q = quiz.make("buddy", seed, {"zone-pages": "128", "requests": "20"})
    assert "A zone of 128 pages" in q.question
    assert len(re.findall(r"^  \d+\. ", q.question, re.M)) == 20
    assert q.answer == solve_buddy(q.question)


@pytest.mark.parametrize("seed", range(20))
def test_translate_knobs_fix_the_access_and_the_answers_still_match(seed):
    q = quiz.make("translate", seed, {"access": "x", "mode": "supervisor"})
    assert "A supervisor instruction fetch of virtual address" in q.question
    assert model_translate(q.answer) == solve_translate(q.question)


def test_oom_and_free_knobs():
    q = quiz.make("oom", 1, {"processes": "6"})
    assert len(re.findall(r"^\[\s*\d+\]", q.question, re.M)) == 6
    assert q.answer == solve_oom(q.question)
    assert "MemTotal" in quiz.make("free", 2, {"mem": "512"}).worked


@pytest.mark.parametrize("argv, message", [
    (["quiz", "buddy", "--ways", "2"], "--ways: not a knob of quiz buddy"),
    (["quiz", "tlb", "--entries", "12"], "--entries 12: must be a power of two from 2 to 64"),
    (["quiz", "tlb", "--entries", "4", "--ways", "8"], "--ways 8: a TLB of 4 entries has at most 4 ways"),
    (["quiz", "tlb", "--policy", "mru"], "--policy 'mru': one of lru, plru, fifo, random"),
    (["quiz", "buddy", "--requests", "x"], "--requests 'x': must be a whole number"),
])
def test_bad_knobs_are_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
