"""The command line: the one place that parses arguments and prints.

One module per command family, each with ``add_parser(subparsers)`` (its sub-commands, with
``func=run``) and ``run(args) -> int``, a thin call into a package; argument types in
:mod:`cnnlab.cli._types`. Bad input gets one line on stderr naming the bad value and what would be
valid, and exit code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Sequence

from cnnlab.errors import CnnlabError

__all__ = ["main", "build_parser", "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__
    from cnnlab.cli import anatomy, compare, compress, conv, data, evaluate, experiment, explore, lecture, train, viz

    parser = _Parser(prog="cnnlab", description="A lab for convolutional neural networks.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for family in (lecture, train, evaluate, anatomy, viz, explore, experiment, compare, compress, data, conv):
        family.add_parser(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C, so locks are released and partial outputs removed."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _given(argv: Sequence[str] | None) -> set[str]:
    """The destinations the user set on the command line, as opposed to defaults (a second parse in which
    every default is ``SUPPRESS``; ``func``, each command's ``run``, is never the user's)."""
    parser = build_parser()
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return set(vars(_parse(parser, argv))) - {"func", "trailing"}


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a command naming a list positional as its ``trailing`` default
    (``predict``'s IMAGE...) takes the words argparse left over after an option: ``predict tv:resnet18
    --pretrained IMAGENET1K_V1 photo.jpg`` (argparse fills a ``*`` positional before it meets the option)."""
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if extra and trailing and not any(e.startswith("-") for e in extra):
        setattr(args, trailing, [*(getattr(args, trailing, None) or []), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from cnnlab.errors import NonFiniteError
    from cnnlab.train import TrainingDivergedError, TrainingInterrupted

    args = _parse(build_parser(), argv)
    args.given = _given(argv)
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return args.func(args)
    except NonFiniteError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except CnnlabError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDivergedError as e:
        print(f"cnnlab {args.command}: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"cnnlab {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted (Ctrl-C)"
        print(f"\ncnnlab {args.command}: {what}; nothing half-written was left", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except BrokenPipeError:
        return 0
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    raise SystemExit(main())
