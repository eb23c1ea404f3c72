"""Result records travel with pytest's reports, so that `mmu sim` sees them from workers on other hosts.

Every co-simulation test writes a JSON record (stats, coverage, failure, replay command) next to the
simulator that ran it.  With pytest-xdist workers on other machines (``mmu sim --tx ssh=...``) that file is
on the worker's disk; so each test also attaches its records to its report (``user_properties``, which
xdist sends to the controller), and this plugin (``-p sim.records``, added by ``mmu sim``) writes them on
the controller into ``$MMU_COSIM_RESULTS_DIR``, where `mmu sim` reads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim import runner as R

PROPERTY = "cosim_records"


def attach(request, recs: list[dict]) -> None:
    request.node.user_properties.append((PROPERTY, [r for r in recs if r]))


def outcomes(directory: Path) -> dict[str, int] | None:
    """pytest's counts of the run that wrote ``directory`` (None for records of a run without them)."""
    try:
        return json.loads((Path(directory) / OUTCOMES).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load(directory: Path, pattern: str = "*.json") -> list[dict]:
    out = []
    for f in sorted(Path(directory).glob(pattern)):
        if f.name == OUTCOMES:
            continue
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


OUTCOMES = "pytest-outcomes.json"  # pytest's own counts of the run, beside the records
_config = None


def pytest_configure(config) -> None:
    global _config
    _config = config


def _terminal():
    return _config.pluginmanager.get_plugin("terminalreporter") if _config is not None else None


def pytest_report_teststatus(report, config):
    """No progress dots: each test gets a line of its own as it finishes (``_result_line``)."""
    if report.when == "call" or (report.when == "setup" and not report.passed):
        return report.outcome, "", report.outcome.upper()
    return None


def pytest_runtest_logreport(report) -> None:
    """On the controller (or a run without xdist): write the records a test attached to its report, and
    print one line per finished test, as cocotb's own results table does."""
    finished = report.when == "call" or (report.when == "setup" and not report.passed)
    if not finished:
        return
    recs = [rec for name, value in report.user_properties if name == PROPERTY for rec in value]
    target = os.environ.get(R.ENV_RESULTS_DIR, "").strip()
    if target:
        directory = Path(target)
        directory.mkdir(parents=True, exist_ok=True)
        for rec in recs:
            (directory / f"{R._safe(rec.get('test') or 'test')}.json").write_text(json.dumps(rec, indent=1))
    terminal = _terminal()
    if terminal is not None:
        terminal.write_line(_result_line(report, recs))


def _result_line(report, recs: list[dict]) -> str:
    """PASS/FAIL, the test, its configuration and seed, translations checked, cycles simulated, wall time."""
    checked = sum((r.get("scoreboard") or {}).get("checked", 0) for r in recs)
    cycles = sum(r.get("cycles", 0) for r in recs)
    first = recs[0] if recs else {}
    name = report.nodeid.split("::")[-1]
    return (f"{report.outcome.upper():<7} {name:<44} {str(first.get('config', '-')):<9} "
            f"seed {str(first.get('seed', '-')):<11} {checked:>8} translations {cycles:>10} cycles "
            f"{report.duration:>7.1f} s")


def pytest_sessionfinish(session, exitstatus) -> None:
    """pytest's counts, for `mmu sim`'s summary (which must agree with pytest's own closing line)."""
    target = os.environ.get(R.ENV_RESULTS_DIR, "").strip()
    terminal = _terminal()
    if not target or terminal is None or hasattr(session.config, "workerinput"):
        return
    counts = {key: len(terminal.stats.get(key, [])) for key in ("passed", "failed", "skipped", "error")}
    Path(target).mkdir(parents=True, exist_ok=True)
    (Path(target) / OUTCOMES).write_text(json.dumps(counts))
