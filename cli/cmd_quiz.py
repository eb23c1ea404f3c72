"""`mmu quiz`: seeded homework questions, in the style of OSTEP's simulators.

    mmu quiz --list
    mmu quiz TOPIC [-s SEED] [-c] [--KNOB VALUE ...]

The same seed always prints the same question; ``-c`` adds the worked answer,
computed by the model (model/teach/quiz/).  Knobs fix one parameter of the
question and leave the rest to the seed (``mmu quiz tlb -s 3 --ways 2 --policy lru``).
"""

from __future__ import annotations

import argparse

from model.errors import UserError
from model.teach import quiz


def register(sub) -> None:
    epilog = "knobs by topic:\n" + "".join(
        f"  {topic:<10} " + (" ".join(f"--{k.name} {k.metavar}" for k in quiz.knobs(topic)) or "(seed only)") + "\n"
        for topic in quiz.TOPICS)
    p = sub.add_parser("quiz", help="seeded homework questions (translate, tlb, buddy, oom, free)",
                       description="Print a seeded question; -c prints the worked answer too.", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic", nargs="?", metavar="TOPIC", help="one of: " + ", ".join(quiz.TOPICS))
    p.add_argument("-s", "--seed", type=int, default=0, help="the question's seed (default 0)")
    p.add_argument("-c", "--compute", action="store_true", help="print the worked answer too")
    p.add_argument("--list", action="store_true", help="list the topics and exit")
    knobs = p.add_argument_group("knobs (each fixes one parameter of the question; see the list below)")
    for knob in quiz.all_knobs().values():
        knobs.add_argument(f"--{knob.name}", dest=f"knob_{knob.keyword}", metavar=knob.metavar, help=knob.help)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, description in quiz.topic_list():
            print(f"{name:<10} {description}")
        return 0
    if not args.topic:
        raise UserError("quiz: name a TOPIC (mmu quiz --list shows them)")
    settings = {name: getattr(args, f"knob_{knob.keyword}") for name, knob in quiz.all_knobs().items()
                if getattr(args, f"knob_{knob.keyword}") is not None}
    q = quiz.make(args.topic, args.seed, settings)
    command = f"mmu quiz {args.topic} -s {args.seed}" + "".join(f" --{n} {v}" for n, v in settings.items())
    print(f"{command}\n")
    print(q.question, end="")
    if args.compute:
        print("\n--- worked answer " + "-" * 60 + "\n")
        print(q.worked, end="")
        print(f"\n{q.answer}")
    else:
        print(f"\n({command} -c prints the worked answer)")
    return 0
