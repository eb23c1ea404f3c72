"""`mmu sim` as a CI job sees it: a line per finished test, pytest's own count in the summary, JUnit XML,
and `--list` naming what -k selects.  One small real run (two tests on Icarus) in a directory of its own."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from cli.main import main


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("mmu-sim")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMU_", "PYTEST_", "SEED"))}
    cmd = [sys.executable, "-m", "cli.main", "sim", "-k", "hit_miss-default or (test_checker_catches and flip_present)",
           "-j", "0", "--seed", "5", "--junitxml", str(where / "results.xml")]
    p = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True)
    print(p.stdout[-3000:], p.stderr[-2000:])
    return p, where


def test_each_test_gets_a_line_as_it_finishes(small_run):
    p, _ = small_run
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("PASSED ")]
    assert [line.split()[1] for line in lines] == ["test_directed[hit_miss-default]",
                                                   "test_checker_catches[flip_present]"]
    assert re.search(r"default\s+seed 5\s+\d+ translations\s+\d+ cycles\s+[\d.]+ s$", lines[0]), lines[0]


def test_summary_counts_what_pytest_counts(small_run):
    p, _ = small_run
    closing = re.search(r"^(\d+) passed", p.stdout, re.M)
    summary = re.search(r"^tests: (\d+) passed, (\d+) failed", p.stdout, re.M)
    assert closing and summary and closing.group(1) == summary.group(1) == "2" and summary.group(2) == "0"


def test_junit_xml_has_every_test(small_run):
    _, where = small_run
    root = ET.parse(where / "results.xml").getroot()
    names = sorted(t.get("name") for t in root.iter("testcase"))
    assert names == ["test_checker_catches[flip_present]", "test_directed[hit_miss-default]"]
    assert not list(root.iter("failure"))


def test_list_prints_what_k_selects(capsys):
    assert main(["sim", "--list", "-k", "hit_miss"]) == 0
    names = capsys.readouterr().out.split()
    assert names and all("hit_miss" in n for n in names)
    assert {"test_directed[hit_miss-default]", "test_directed[hit_miss-nopwc]"} <= set(names)
    assert main(["sim", "--list"]) == 0
    everything = capsys.readouterr().out.split()
    assert set(names) < set(everything) and len(everything) == len(set(everything))
