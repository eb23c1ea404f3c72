"""Bad input gets one line naming the input (file:line where there is one) and the rule, exit 2, no traceback."""

import pytest

from cli.main import main

WORKLOADS = [
    (b"\x7fELF\x02\x01\x01\x00\xd0\xff", "not a text workload (byte 0xd0 at offset 8 is not UTF-8)"),
    (b"boot mem=64M\nspawn a\n\x00\n", "not a text workload (a NUL byte at offset 21)"),
    (b"", "no operations"),
    (b"# only a comment\nboot mem=64M\n", "no operations"),
    (b"boot mem=64M\nspawn a\nmmap m 1M\nfree m\n", ":4: free m: m was not made by malloc, calloc or realloc"),
    (b"boot mem=64M\nspawn a\nmmap m 1M\nrealloc m 2M\n", ":4: realloc m: m was not made by malloc"),
    (b"boot mem=64M\nspawn a\nfree 0x1000\n", ":3: free 0x1000: takes a variable made by malloc"),
    (b"boot mem=64M\nspawn a\nspawn a\n", ":3: spawn a: a live process is named a already"),
    (b"boot mem=64M\nspawn a\nfork a\n", ":3: fork a: a live process is named a already"),
]


@pytest.mark.parametrize("data, message", WORKLOADS, ids=[m.split(":")[-1][:30] for _, m in WORKLOADS])
def test_bad_workloads(tmp_path, capsys, data, message):
    path = tmp_path / "w.wl"
    path.write_bytes(data)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] in ([], ["seed 0"]), err  # at most the seed line, then the one error line
    assert err[-1].startswith(f"mmu: error: {path}") and message in err[-1], err


def test_free_of_a_null_pointer_does_nothing(tmp_path, capsys):
    """glibc free(NULL) is a no-op; a malloc that failed leaves NULL in its variable."""
    path = tmp_path / "w.wl"
    path.write_text("boot mem=16M\nspawn a\nmalloc huge 64G\nfree huge\n")
    assert main(["run", str(path)]) == 0
    assert "returned NULL" in capsys.readouterr().out


def test_a_name_can_be_reused_after_its_process_exits(tmp_path):
    path = tmp_path / "w.wl"
    path.write_text("boot mem=64M\nspawn a\nexit\nspawn a\n")
    assert main(["run", str(path)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["run", "small-malloc", "extra"], "mmu run: error: unrecognized arguments: extra (see 'mmu run --help')"),
    (["free", "small-malloc", "--bogus"], "mmu free: error: unrecognized arguments: --bogus (see 'mmu free --help')"),
    (["config", "--dtlb-entries", "abc"], "mmu config: error: argument --dtlb-entries: invalid int value: 'abc' "
                                          "(see 'mmu config --help')"),
    (["top"], "mmu top: error: the following arguments are required: WORKLOAD (see 'mmu top --help')"),
    (["frobnicate"], "mmu: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_argparse_errors_are_one_line_with_a_hint(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err


@pytest.mark.parametrize("argv, message", [
    (["run", "small-malloc", "--report", ""], "--report '': a comma-separated list with no empty items"),
    (["run", "small-malloc", "--report", "free,,top"], "--report 'free,,top': a comma-separated list"),
    (["run", "small-malloc", "--report", "free,free"], "free is listed twice"),
    (["top", "small-malloc", "--fields", ""], "--fields '': a comma-separated list with no empty items"),
    (["explain", "0x400000", "--after", "0x1000,", "--no-hw"], "--after '0x1000,': a comma-separated list"),
    (["explain", "0x400000", "--dram-latency", "100000"], "dram latency=100000: must be 0..1024 cycles"),
    (["sim", "--results", "/nonexistent/records"], "--results /nonexistent/records: not a directory"),
])
def test_empty_lists_and_impossible_values_are_refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert message in err[-1] and err[-1].startswith("mmu: error: "), err


def test_every_subcommand_has_a_description():
    from cli.main import build_parser

    parser = build_parser([])
    sub = next(a for a in parser._actions if a.dest == "==SUPPRESS==" or getattr(a, "choices", None)
               and isinstance(a.choices, dict))
    assert set(sub.choices) >= {"run", "sim", "free", "quiz", "verilog"}
    for name, command in sub.choices.items():
        assert command.description and len(command.description) > 20, name
