"""Every workload a test runs ends under the kernel's invariant checker (model/mm/invariants.py)."""

from __future__ import annotations

import pytest

from model.mm import invariants
from model.user import workload


@pytest.fixture(autouse=True)
def invariants_after_every_workload(monkeypatch):
    monkeypatch.setattr(workload, "AFTER_RUN", [invariants.check])
