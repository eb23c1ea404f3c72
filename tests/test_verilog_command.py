"""`mmu verilog`: the file says which configuration it holds, two configurations never share a default name,
and an unwritable path is refused before the design is elaborated."""

import json
import re

import pytest

from cli.main import main
from model.config import PRESETS, MMUConfig


def _header_config(text: str) -> dict:
    lines = [line[3:] for line in text.splitlines() if line.startswith("// ")]
    body = "\n".join(lines[1:lines.index(next(x for x in lines if x.startswith("Regenerate")))])
    return json.loads(body)


def test_header_holds_the_whole_configuration_and_default_names_differ(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["verilog", "--preset", "nopwc"]) == 0
    assert main(["verilog", "--preset", "nopwc", "--dtlb-entries", "64"]) == 0
    files = sorted((tmp_path / "build").glob("mmu-*.v"))
    assert [f.name for f in files][-1] == "mmu-nopwc.v" and len(files) == 2
    want = {k: v for k, v in PRESETS["nopwc"].to_dict().items() if k != "dram"}
    assert _header_config((tmp_path / "build" / "mmu-nopwc.v").read_text()) == want
    other = next(f for f in files if f.name != "mmu-nopwc.v")
    assert _header_config(other.read_text())["dtlb"]["entries"] == 64
    assert re.fullmatch(r"mmu-cfg-[0-9a-f]{12}\.v", other.name)
    rebuilt = MMUConfig.from_dict(_header_config(other.read_text()))
    assert rebuilt.dtlb.entries == 64 and rebuilt.pwc_entries == PRESETS["nopwc"].pwc_entries


@pytest.mark.parametrize("where, message", [("dir", "is a directory"), ("file-parent", "cannot write")])
def test_unwritable_paths_are_refused_before_elaborating(tmp_path, monkeypatch, capsys, where, message):
    import hw.export

    def elaborate(*_):
        raise AssertionError("elaborated before the path was checked")
    monkeypatch.setattr(hw.export, "verilog_text", elaborate)
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    out = tmp_path if where == "dir" else blocker / "mmu.v"
    assert main(["verilog", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out}: {message}" in err
