"""Seeded homework questions in the style of OSTEP's simulators (``paging-multilevel-translate.py`` and co.).

Each topic module has ``DESCRIPTION``, ``KNOBS`` and ``make(seed, **knobs) -> Quiz``.
The question is drawn from ``random.Random(seed)`` alone, so a seed names a
question for good; the worked answer is computed by the model (walker, TLB,
buddy allocator, kernel), never by the quiz itself, so it is exactly what the
simulator does.

Knobs, like the options of OSTEP's simulators, fix one parameter of the
question (the TLB's ways, the zone's size, the number of accesses) and leave
the rest to the seed: every value is still drawn, then the knob replaces it,
so ``-s 7 --ways 2`` is seed 7's question with a 2-way TLB.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from model.errors import UserError


@dataclass(frozen=True)
class Quiz:
    question: str
    worked: str  # the worked answer, step by step
    answer: str  # one line, "Answer: ...", that tests and graders can compare


@dataclass(frozen=True)
class Knob:
    """One parameter of a topic's question that the user may fix: ``--NAME VALUE`` on the command line."""

    name: str  # the option, without the dashes (dashes, not underscores)
    metavar: str
    help: str
    parse: Callable[[str], object]  # the value from its text; raises UserError naming the rule

    @property
    def keyword(self) -> str:
        return self.name.replace("-", "_")


def integer(name: str, low: int, high: int, *, power_of_two: bool = False) -> Callable[[str], int]:
    """A parser for a whole number in [low, high] (a power of two when asked)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise UserError(f"--{name} {text!r}: must be a whole number") from None
        if not low <= value <= high or (power_of_two and value & (value - 1)):
            kind = "a power of two" if power_of_two else "a whole number"
            raise UserError(f"--{name} {value}: must be {kind} from {low} to {high}")
        return value
    return parse


def choice(name: str, options: dict[str, object]) -> Callable[[str], object]:
    """A parser for one of ``options`` (text -> value)."""
    def parse(text: str) -> object:
        if text not in options:
            raise UserError(f"--{name} {text!r}: one of {', '.join(options)}")
        return options[text]
    return parse


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


def knobs(topic: str) -> tuple[Knob, ...]:
    return importlib.import_module(_module(topic)).KNOBS


def all_knobs() -> dict[str, Knob]:
    """Every topic's knobs by name (a name means the same in every topic that has it)."""
    return {knob.name: knob for topic in TOPICS for knob in knobs(topic)}


def _module(topic: str) -> str:
    if topic not in TOPICS:
        raise UserError(f"quiz topic {topic!r}: one of {', '.join(TOPICS)} (mmu quiz --list)")
    return TOPICS[topic]


def make(topic: str, seed: int, settings: dict[str, str] | None = None) -> Quiz:
    """The question of ``seed``, with the knobs in ``settings`` (name -> text as typed) fixed."""
    module = importlib.import_module(_module(topic))
    own = {knob.name: knob for knob in module.KNOBS}
    values = {}
    for name, text in (settings or {}).items():
        if name not in own:
            mine = ", ".join(f"--{n}" for n in own) or "none"
            raise UserError(f"--{name}: not a knob of quiz {topic} (its knobs: {mine})")
        values[own[name].keyword] = own[name].parse(text)
    return module.make(seed, **values)
