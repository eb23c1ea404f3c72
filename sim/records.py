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


def load(directory: Path, pattern: str = "*.json") -> list[dict]:
    out = []
    for f in sorted(Path(directory).glob(pattern)):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def pytest_runtest_logreport(report) -> None:
    """On the controller (or a run without xdist): write the records a test attached to its report."""
    target = os.environ.get(R.ENV_RESULTS_DIR, "").strip()
    if not target or report.when != "call":
        return
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    for name, recs in report.user_properties:
        if name == PROPERTY:
            for rec in recs:
                (directory / f"{R._safe(rec.get('test') or 'test')}.json").write_text(json.dumps(rec, indent=1))
