"""Option values every subcommand parses alike."""

from __future__ import annotations

from model.errors import UserError


def comma_list(option: str, text: str) -> list[str]:
    """``a,b,c`` as given to ``--option``: refused when empty, with an empty item, or with an item twice."""
    items = [s.strip() for s in text.split(",")]
    if "" in items:
        raise UserError(f"--{option} {text!r}: a comma-separated list with no empty items")
    for s in items:
        if items.count(s) > 1:
            raise UserError(f"--{option} {text!r}: {s} is listed twice; list each value once")
    return items
