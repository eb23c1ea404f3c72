"""The tutorial's commands run, in both languages, and print what the text tells the reader to look for.

docs/tutorial.md and docs/zh/tutorial.md show their commands in ```sh blocks. Every line of such a block is
one `mmu` command, optionally followed by a `#` comment; the double-quoted strings in that comment are what
the reader is told to look for, and each must appear in the command's standard output. Every command runs
in-process through `cli.main.main`, in a scratch working directory that links the repository's `replay/traces/`
(so `mmu verilog --out build/mmu.v` and `mmu sweep --out sweep` write there, not into the repository), and
must exit with status 0. The Chinese edition must hold the same commands, in the same order, with the same
strings to look for: running the English list therefore covers both.

Deliberately not run, and not in ```sh blocks: the commands the tutorials mention only in their text because
they install software or run the Icarus co-simulation for seconds to minutes (`make install`, `make sim`,
`WAVES=1 make sim`, `mmu sim -k ... --waves`); the co-simulation has its own tests in sim/regression.py.
What the tutorials say about its waveforms is checked here instead: every signal they name (`mmu_top....`)
is declared in that scope of the generated Verilog, and the state numbers they give are the Amaranth FSMs'
encodings.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from amaranth.hdl import Fragment

from cli.main import main
from hw.export import verilog_text
from hw.mmu import MMU
from hw.walker import Walker
from model.config import MMUConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"en": ROOT / "docs" / "tutorial.md", "zh": ROOT / "docs" / "zh" / "tutorial.md"}

_FENCE = re.compile(r"^\s*```(\S*)\s*$")


def sh_blocks(text: str) -> list[list[str]]:
    """The lines of every ```sh block, stripped, in order."""
    blocks, inside, current = [], False, None
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if fence and not inside:
            inside, current = True, ([] if fence.group(1) == "sh" else None)
        elif fence and fence.group(1) == "":
            inside = False
            if current is not None:
                blocks.append(current)
        elif inside and current is not None:
            current.append(line.strip())
    assert not inside, "an unclosed ``` fence"
    return blocks


def commands(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(command, strings to look for) for every non-blank line of every ```sh block."""
    out = []
    for block in sh_blocks(text):
        for line in block:
            if not line:
                continue
            command, _, comment = line.partition(" #")
            out.append((command.strip(), tuple(re.findall(r'"([^"]+)"', comment))))
    return out


TEXTS = {lang: path.read_text(encoding="utf-8") for lang, path in DOCS.items()}
EN = commands(TEXTS["en"])


def test_sh_blocks_hold_only_mmu_commands():
    for lang, text in TEXTS.items():
        cmds = commands(text)
        assert len(cmds) >= 40, f"{lang}: only {len(cmds)} commands found"
        for command, _ in cmds:
            assert command.startswith("mmu ") and "#" not in command, f"{lang}: not an mmu command: {command!r}"
            shlex.split(command)  # quoting is valid


def test_the_chinese_tutorial_has_the_same_commands_and_the_same_things_to_look_for():
    assert commands(TEXTS["zh"]) == EN


def test_the_chinese_tutorial_has_the_same_sections():
    def headings(text):
        return [m.group(1) for m in re.finditer(r"^## (\d+)\. ", text, re.M)]
    assert headings(TEXTS["zh"]) == headings(TEXTS["en"]) == [str(i) for i in range(1, 11)]


@pytest.mark.parametrize("command, look_for", EN, ids=[c for c, _ in EN])
def test_command_runs_and_prints_what_the_tutorial_says(command, look_for, tmp_path, monkeypatch, capsys):
    (tmp_path / "replay").symlink_to(ROOT / "replay")
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(shlex.split(command)[1:])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 0, f"{command}: exit status {rc}\n{err}"
    for text in look_for:
        assert text in out, f"{command}: the tutorial says to look for {text!r}, which is not in the output"


def _declared_signals(verilog: str) -> dict[str, set[str]]:
    """Module name -> identifiers declared in it (reg, wire, input, output), escaped names unescaped."""
    decl = re.compile(r"^\s*(?:input|output|inout|wire|reg)\b(?:\s+signed)?(?:\s*\[[^\]]*\])?"
                      r"\s+(\\\S+|[A-Za-z_][\w$]*)")
    modules: dict[str, set[str]] = {}
    current = None
    for line in verilog.splitlines():
        m = re.match(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)", line)
        if m:
            current = modules.setdefault(m.group(1).lstrip("\\"), set())
            continue
        m = decl.match(line)
        if m and current is not None:
            current.add(m.group(1).lstrip("\\"))
    return modules


def test_the_waveform_signals_the_tutorials_name_exist_in_the_generated_verilog():
    modules = _declared_signals(verilog_text(MMUConfig(), "mmu_top")[0])
    names = set()
    for text in TEXTS.values():
        names |= set(re.findall(r"`(mmu_top\.[\w.]+)`", text))
    assert len(names) >= 20
    for name in sorted(names):
        scope = max((m for m in modules if name.startswith(m + ".")), key=len, default=None)
        assert scope is not None, f"{name}: no module for its scope"
        signal = name[len(scope) + 1:]
        assert signal in modules[scope], f"{name}: {signal!r} is not declared in module {scope}"


def _fsm_encoding(component, fsm_name: str) -> dict[str, int]:
    """State name -> number of the FSM ``fsm_name`` in ``component``'s elaboration (as the Verilog encodes it)."""
    component._MustUse__silence = True  # elaborated by hand below, not through a design
    module = component.elaborate(None)
    Fragment.get(module, None)  # elaborate the submodules too, so none is reported unused
    return dict(module._generated[fsm_name].encoding)


def test_the_state_numbers_the_tutorials_give_are_the_fsm_encodings():
    cfg = MMUConfig()
    for encoding in (_fsm_encoding(MMU(cfg), "mmu"), _fsm_encoding(Walker(cfg), "walker")):
        listed = ", ".join(f"{code} {state}" for state, code in sorted(encoding.items(), key=lambda s: s[1]))
        for lang, text in TEXTS.items():
            assert listed in text, f"{lang}: the states should read {listed!r}"
