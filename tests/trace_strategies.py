"""The hypothesis strategy the trace tests share: runs of accesses to a few pages, repeats folded in."""

from hypothesis import strategies as st

from model.x86.pte import Access
from replay.lackey import Trace

R, W, F = Access.READ, Access.WRITE, Access.FETCH


def traces(pages: list[int], *, max_repeat: int, max_runs: int):
    """Traces over ``pages``: each run repeats one page (reads and writes mixed, fetches stay fetches)."""
    @st.composite
    def strategy(draw):
        runs = draw(st.lists(st.tuples(st.integers(0, len(pages) - 1), st.sampled_from([R, W, F]),
                                       st.integers(1, max_repeat), st.integers(0, 4095)),
                             min_size=1, max_size=max_runs))
        vaddr, access = [], []
        for page, acc, repeat, offset in runs:
            for _ in range(repeat):
                vaddr.append(pages[page] + offset)
                access.append(draw(st.sampled_from([acc, acc, R, W])) if acc != F else F)
        return Trace.from_arrays(vaddr, access)
    return strategy()
