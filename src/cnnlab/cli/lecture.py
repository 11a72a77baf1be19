"""``cnnlab lecture``: the whole lecture reproduced as one report (``lecture.report.run_lecture``) and its
scoreboard."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("lecture", help="reproduce the whole lecture: one report, every number checked",
                              description="Run every section of the lecture in its order, training or reusing what "
                                          "it needs; write OUT/index.html, lecture.json and lecture.md and print "
                                          "how many of its statements are reproduced, within tolerance, "
                                          "explained or cited. Exit 1 if any check failed.")
    p.add_argument("--out", default="runs/lecture", help="the report's folder (runs/lecture)")
    p.add_argument("--budget", choices=("quick", "full"), default="full",
                   help="full (default): the lecture's recipes; quick: subsets and fewer epochs, for a look")
    p.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse finished runs of the same recipe (default); --no-reuse trains again")
    p.add_argument("--section", action="append", metavar="KEY", help="only this section (repeatable)")
    p.add_argument("--data-dir", help="where Fashion-MNIST is (default: found as `cnnlab data info` says)")
    p.add_argument("--catsdogs", metavar="PATH", help="a dogs-vs-cats image folder, for the visualization section")
    p.add_argument("--json", action="store_true", help="print lecture.json instead of the scoreboard")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.lecture.report import format_scoreboard, run_lecture

    log = (lambda s: print(s, file=sys.stderr, flush=True)) if a.json else (lambda s: print(s, flush=True))
    result = run_lecture(a.out, budget=a.budget, reuse=a.reuse, data_dir=a.data_dir, catsdogs=a.catsdogs,
                         sections=a.section, log=log)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n" + format_scoreboard(result) + f"\n\nreport: {result['index']}")
    failed = sum(c["verdict"] == "failed" for s in result["sections"] for c in s["checks"])
    return 1 if failed else 0
