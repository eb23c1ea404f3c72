"""Seeded homework questions in the style of OSTEP's simulators (``paging-multilevel-translate.py`` and co.).

Each topic module has ``DESCRIPTION`` and ``make(seed) -> Quiz``.  The question
is drawn from ``random.Random(seed)`` alone, so a seed names a question for
good; the worked answer is computed by the model (walker, TLB, buddy
allocator, kernel), never by the quiz itself, so it is exactly what the
simulator does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from model.errors import UserError


@dataclass(frozen=True)
class Quiz:
    question: str
    worked: str  # the worked answer, step by step
    answer: str  # one line, "Answer: ...", that tests and graders can compare


# topic -> module, in the order `mmu quiz --list` prints them
TOPICS = {
    "translate": "model.teach.quiz.translate",
    "tlb": "model.teach.quiz.tlb_replacement",
    "buddy": "model.teach.quiz.buddy",
    "oom": "model.teach.quiz.oom",
    "free": "model.teach.quiz.free",
}


def topic_list() -> list[tuple[str, str]]:
    """(topic, one-line description) of every topic."""
    return [(name, importlib.import_module(mod).DESCRIPTION) for name, mod in TOPICS.items()]


def make(topic: str, seed: int) -> Quiz:
    if topic not in TOPICS:
        raise UserError(f"quiz topic {topic!r}: one of {', '.join(TOPICS)} (mmu quiz --list)")
    return importlib.import_module(TOPICS[topic]).make(seed)
