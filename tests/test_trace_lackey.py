"""The lackey trace reader: format facts, page splitting, errors, and the fast parser against the plain rules."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.x86.pte import Access
from replay import lackey
from replay.lackey import RULES, TraceError, check_line, parse_lackey, read_lackey

R, W, F = Access.READ, Access.WRITE, Access.FETCH

BANNER = (
    "==4242== Lackey, an example Valgrind tool\n"
    "==4242== Copyright (C) 2002-2017, and GNU GPL'd, by Nicholas Nethercote.\n"
    "==4242== Command: ./a.out\n"
    "==4242== \n"
)
FOOTER = "==4242== \n==4242==   total:         166,016\n==4242== Exit code:       0\n"


def accesses(text: str) -> list[tuple[int, int]]:
    t = parse_lackey(text)
    return list(zip(t.vaddr.tolist(), t.access.tolist()))


def test_lackey_format_with_banner_lines():
    t = parse_lackey(BANNER + "I  0401ab70,3\n L 1fff000768,8\n S 04c2f0c8,4\n" + FOOTER)
    assert t.records == 3
    assert t.vaddr.dtype == np.uint64 and t.access.dtype == np.uint8
    assert list(zip(t.vaddr.tolist(), t.access.tolist())) == [(0x401AB70, F), (0x1FFF000768, R), (0x4C2F0C8, W)]


def test_valgrind_warning_lines_are_skipped_too():
    assert accesses("--4242-- WARNING: unhandled syscall\n L 10,1\n") == [(0x10, R)]


def test_modify_is_a_read_then_a_write():
    assert accesses(" M 04c2f0c0,8\n") == [(0x4C2F0C0, R), (0x4C2F0C0, W)]


def test_access_crossing_a_page_touches_both_pages():
    assert accesses("I  0ffe,4\n L 1ff8,8\n") == [(0xFFE, F), (0x1000, F), (0x1FF8, R)]


def test_modify_crossing_a_page_reads_both_then_writes_both():
    assert accesses(" M 2ffc,8\n") == [(0x2FFC, R), (0x3000, R), (0x2FFC, W), (0x3000, W)]


def test_widths_and_case():
    t = accesses(" L 1,4096\n L FFFFFFFFFFFFF000,1\n S aBc,1\n")
    assert t == [(1, R), (0x1000, R), (0xFFFFFFFFFFFFF000, R), (0xABC, W)]


def test_last_line_without_newline():
    assert accesses(" L 10,1\n S 20,1") == [(0x10, R), (0x20, W)]


def test_gzip_is_read_transparently(tmp_path):
    text = BANNER + "I  0401ab70,3\n M 1000,8\n"
    plain, packed = tmp_path / "t.txt", tmp_path / "t.anything"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    a, b = read_lackey(plain), read_lackey(packed)
    assert a.vaddr.tolist() == b.vaddr.tolist() and a.access.tolist() == b.access.tolist()


@pytest.mark.parametrize("line, rule", [
    ("I 1000,4", "kind"),
    (" X 1000,4", "kind"),
    ("", "kind"),
    ("I  1000,4,5", "comma"),
    ("I  1000 4", "comma"),
    ("I  ,4", "address"),
    (" L 10g0,4", "address"),
    (" L 12345678901234567,1", "address"),
    (" S 10,0", "size"),
    (" S 10,4097", "size"),
    (" L 1,12345", "size"),
    ("I  1000,4\r", "size"),
    (" S ffffffffffffffff,2", "wrap"),
    ("==x== hello", "valgrind"),
])
def test_malformed_line_names_file_line_and_rule(tmp_path, line, rule):
    path = tmp_path / "bad.trace"
    path.write_text(BANNER + "I  1000,4\n" + line + "\n L 2000,8\n")
    with pytest.raises(TraceError) as e:
        read_lackey(path)
    assert str(e.value).startswith(f"{path}:6: {RULES[rule]}")


def test_first_bad_line_is_reported_across_blocks(monkeypatch):
    monkeypatch.setattr(lackey, "_BLOCK", 64)  # many blocks, lines split across block edges
    lines = [f" L {0x1000 * i:x},8" for i in range(200)]
    lines[150] = " L 1000;8"
    lines[170] = "junk"
    with pytest.raises(TraceError, match=r"^t:151: a record has exactly one ','"):
        parse_lackey("\n".join(lines), "t")
    del lines[150], lines[169]
    t = parse_lackey("\n".join(lines), "t")
    assert t.vaddr.tolist() == [0x1000 * i for i in range(200) if i not in (150, 170)]


def test_no_records_is_an_error():
    with pytest.raises(TraceError, match="no I/L/S/M records.*--trace-mem=yes"):
        parse_lackey(BANNER + FOOTER, "t")


def test_unreadable_file(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        read_lackey(tmp_path / "missing")


# Mostly well-formed lines (so that whole inputs are often valid) mixed with near-misses and noise.
_record = st.builds(
    lambda k, addr, width, upper, size: k + (str.upper if upper else str)(f"{addr:0{width}x}") + f",{size}",
    st.sampled_from(["I  ", " L ", " S ", " M "]), st.integers(0, 2**64 - 1), st.integers(1, 16), st.booleans(),
    st.integers(1, 4096))
_valgrind = st.builds(lambda c, pid, rest: f"{c}{pid}{c} {rest}", st.sampled_from(["==", "--"]),
                      st.integers(0, 99999), st.text(alphabet="ab ,:0123", max_size=12))
_near_miss = st.builds(lambda k, a, s: k + a + "," + s,
                       st.sampled_from(["I  ", " L ", " S ", " M ", " L", "I ", "  "]),
                       st.text(alphabet="0123456789abcdefABCDEFx", min_size=0, max_size=18),
                       st.text(alphabet="0123456789", min_size=0, max_size=5))
_noise = st.text(alphabet="IiLSMX ,0123456789abcdefABCDEFg=-\r", max_size=24)
_line = st.one_of(_record, _record, _record, _valgrind, _near_miss, _noise)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, min_size=1, max_size=6))
def test_fast_parser_agrees_with_the_plain_rules(lines):
    """The vectorised parser accepts exactly what check_line accepts, with the same values."""
    lines = [ln for ln in lines if "\n" not in ln]
    text = "\n".join(lines) + "\n"
    bad = [i for i, ln in enumerate(lines) if check_line(ln.encode()) is not None]
    records = [ln for ln in lines if not ln.startswith(("==", "--"))]
    if bad:
        with pytest.raises(TraceError, match=rf"^t:{bad[0] + 1}: "):
            parse_lackey(text, "t")
        return
    if not records:
        return
    expect = []
    for ln in records:
        addr, size = (int(x, 16 if i == 0 else 10) for i, x in enumerate(ln[3:].split(",")))
        pages = [addr] if (addr >> 12) == ((addr + size - 1) >> 12) else [addr, ((addr >> 12) + 1) << 12]
        kind = ln[:3].strip()
        ops = {"I": [F], "L": [R], "S": [W], "M": [R, W]}[kind]
        expect += [(p, op) for op in ops for p in pages]
    assert accesses(text) == expect
