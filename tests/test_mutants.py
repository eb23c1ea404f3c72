"""The mutant harness (sim/mutants.py): the catalogue matches hw/, a mutant only ever edits a copy, and the
random regression kills a sample of the hardest mutants (one co-simulation per mutant, random tests only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.errors import UserError
from sim import mutants as MU

ROOT = Path(__file__).resolve().parent.parent
# The hard classes; at the CI budget each must fall to the random tests alone.
CI_SAMPLE = ("flush_va_skips_superpages", "giant_matched_like_2m", "nx_leaf_only", "pml4e_high_bits_unchecked",
             "global_superpages_flushed", "flush_va_other_pcids", "flush_va_whole_pwc",
             "stale_fill_after_lookup_flush")


def test_catalogue_matches_hw_exactly_once():
    mutants = MU.load()
    assert len(mutants) >= 25
    MU.check_all(mutants)  # raises naming the mutant whose snippet is missing or repeated
    for m in mutants:
        assert m.file.startswith("hw/") and m.description and m.original != m.replacement
    assert set(CI_SAMPLE) <= {m.name for m in mutants}


def test_a_snippet_that_is_missing_or_repeated_is_refused(tmp_path):
    tree = MU.copy_tree(ROOT, tmp_path)
    m = MU.load()[0]
    path = tree / m.file
    text = path.read_text()
    path.write_text(text + "\n" + m.original)
    with pytest.raises(UserError, match="occurs 2 times"):
        m.apply(tree)
    path.write_text(text.replace(m.original, ""))
    with pytest.raises(UserError, match="occurs 0 times"):
        m.apply(tree)


def test_a_mutant_edits_the_copy_only(tmp_path):
    m = MU.load()[0]
    before = (ROOT / m.file).read_text()
    tree = MU.copy_tree(ROOT, tmp_path)
    m.apply(tree)
    after = (tree / m.file).read_text()
    assert m.replacement in after and after.count(m.original) == (m.replacement.count(m.original))
    assert (ROOT / m.file).read_text() == before


def test_a_catalogue_entry_without_a_field_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[mutant]]\nname = "x"\nclass = "c"\nfile = "hw/mmu.py"\noriginal = "a"\nreplacement = "b"\n')
    with pytest.raises(UserError, match="has no 'description'"):
        MU.load(bad)
    bad.write_text('[[mutant]]\nname = "x"\nclass = "c"\nfile = "model/config.py"\noriginal = "a"\n'
                   'replacement = "b"\ndescription = "d"\n')
    with pytest.raises(UserError, match="hw/ only"):
        MU.load(bad)


@pytest.mark.cocotb
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) is not installed")
def test_random_tests_kill_the_hard_mutants(tmp_path):
    """The CI budget: the hard sample against the random tests with one seed, two mutants at a time."""
    seed = os.environ.get("SEED", "").strip() or "1"
    cmd = [sys.executable, "-m", "sim.mutants", "--random-only", "--seed", seed, "-j", "2",
           "--only", ",".join(CI_SAMPLE)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(proc.stdout)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"{len(CI_SAMPLE)} of {len(CI_SAMPLE)} mutants killed, {len(CI_SAMPLE)} by random tests alone", \
        f"seed {seed}; replay: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-2000:]}"
