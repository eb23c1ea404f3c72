"""The one preset table (``model.config.PRESETS``) and ``--preset`` on the command line."""

from __future__ import annotations

import json

from cli import main as cli
from model.config import PRESET_DOCS, PRESETS, MMUConfig
from sim import regression


def test_every_configuration_the_regression_names_is_a_preset():
    named = {cfg for _, cfgs in regression.DIRECTED_TESTS + regression.RANDOM_TESTS for cfg in cfgs}
    named |= {cfg for _, cfg, _ in regression.FULLSYS_TESTS}
    assert named <= set(PRESETS) and "default" in named


def test_presets_are_distinct_and_default_is_the_dataclass_default():
    assert PRESETS["default"] == MMUConfig()
    hardware = [json.dumps({k: v for k, v in c.to_dict().items() if k != "dram"}, sort_keys=True)
                for c in PRESETS.values()]
    assert len(set(hardware)) == len(hardware)  # no two presets build the same design
    assert sum(c.dtlb.policy.value == "random" for c in PRESETS.values()) == 1  # one "random" configuration


def test_list_presets_names_each_with_its_reason(capsys):
    assert cli.main(["config", "--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(PRESET_DOCS[line.split()[0]] in line for line in lines)


def test_preset_is_the_base_and_options_override_it(capsys):
    assert cli.main(["config", "--preset", "nopwc", "--pwc", "4"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == {**PRESETS["nopwc"].to_dict(), "pwc_entries": 4}


def test_preset_and_config_file_together_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(MMUConfig().to_dict()))
    assert cli.main(["config", "--preset", "fifo4", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--preset fifo4 and --config" in err


def test_unknown_preset_in_sweep_is_one_line_error(capsys):
    assert cli.main(["sweep", "no-such.gz", "--preset", "nope"]) == 2
    assert capsys.readouterr().err.startswith("mmu: error: --preset nope: unknown preset")
