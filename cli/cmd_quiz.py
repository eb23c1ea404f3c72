"""`mmu quiz`: seeded homework questions, in the style of OSTEP's simulators.

    mmu quiz --list
    mmu quiz TOPIC [-s SEED] [-c]

The same seed always prints the same question; ``-c`` adds the worked answer,
computed by the model (model/teach/quiz/).
"""

from __future__ import annotations

import argparse

from model.errors import UserError
from model.teach import quiz


def register(sub) -> None:
    p = sub.add_parser("quiz", help="seeded homework questions (translate, tlb, buddy, oom, free)",
                       description="Print a seeded question; -c prints the worked answer too.")
    p.add_argument("topic", nargs="?", metavar="TOPIC", help="one of: " + ", ".join(quiz.TOPICS))
    p.add_argument("-s", "--seed", type=int, default=0, help="the question's seed (default 0)")
    p.add_argument("-c", "--compute", action="store_true", help="print the worked answer too")
    p.add_argument("--list", action="store_true", help="list the topics and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, description in quiz.topic_list():
            print(f"{name:<10} {description}")
        return 0
    if not args.topic:
        raise UserError("quiz: name a TOPIC (mmu quiz --list shows them)")
    q = quiz.make(args.topic, args.seed)
    print(f"mmu quiz {args.topic} -s {args.seed}\n")
    print(q.question, end="")
    if args.compute:
        print("\n--- worked answer " + "-" * 60 + "\n")
        print(q.worked, end="")
        print(f"\n{q.answer}")
    else:
        print(f"\n(mmu quiz {args.topic} -s {args.seed} -c prints the worked answer)")
    return 0
