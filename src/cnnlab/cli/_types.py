"""Argument types for argparse (each raises ``ArgumentTypeError`` naming the value and what is valid), and
:class:`BadInput`, the error of a bad combination that argparse cannot see."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from cnnlab.errors import CnnlabError

__all__ = ["BadInput", "add_pretrained_arg", "pretrained_face"]


class BadInput(CnnlabError):
    """A bad command-line value or combination of flags, named in the message."""


def _int_at_least(minimum: int):
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_ints(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",")]
    except ValueError:
        v = []
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {s!r}")
    return v


def _finite(positive: bool):
    what = "a positive finite number" if positive else "a finite number"

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or (positive and not v > 0):
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v

    return parse


_positive_float = _finite(positive=True)
_finite_float = _finite(positive=False)


def _count_or_fraction(s: str) -> int | float:
    try:
        v: int | float = int(s)
    except ValueError:
        try:
            v = float(s)
        except ValueError:
            v = -1
    if v < 0 or (isinstance(v, float) and not v < 1):
        raise argparse.ArgumentTypeError(f"must be a count (0, 1, 2, ...) or a fraction in [0, 1), got {s!r}")
    return v


def _image_size(s: str) -> int | list[int]:
    try:
        v = [int(p) for p in s.replace("x", ",").split(",")]
    except ValueError:
        v = []
    if not 1 <= len(v) <= 2 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"must be N or H,W (positive integers), got {s!r}")
    return v[0] if len(v) == 1 else v


def _input_size(s: str) -> tuple[int, ...]:
    try:
        v = tuple(int(p) for p in s.replace("x", ",").split(","))
    except ValueError:
        v = ()
    if len(v) not in (2, 3, 4) or min(v) < 1:
        raise argparse.ArgumentTypeError(f"must be C,H,W (or C,L / C,D,H,W) positive integers, got {s!r}")
    return v


def _ints(s: str) -> list[int]:
    try:
        return [int(p) for p in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {s!r}") from None


def _names(s: str) -> list[str]:
    names = [n.strip() for n in s.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated names, got {s!r}")
    return names


def _freeze(s: str) -> str | int:
    if s in ("features", "none"):
        return s
    if s.isdigit():
        return int(s)
    raise argparse.ArgumentTypeError(f"must be features, none or a number of blocks (0, 1, ...), got {s!r}")


def _key_value(s: str) -> tuple[str, Any]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_pretrained_arg(p: argparse.ArgumentParser) -> None:
    """``--pretrained [NAME]`` for a ``tv:NAME`` model: torchvision's published weights (``DEFAULT`` when no name
    is given), from torch hub's cache or downloaded into it."""
    p.add_argument("--pretrained", nargs="?", const="DEFAULT", metavar="WEIGHTS",
                   help="tv:NAME only: torchvision's published weights (DEFAULT, or a name such as IMAGENET1K_V1), "
                        "from torch hub's cache (~/.cache/torch/hub/checkpoints) or downloaded into it")


def pretrained_face(a: argparse.Namespace, *, needs_images: str | None = None) -> None:
    """``tv:NAME --pretrained [WEIGHTS]`` given where a run is expected: ``a.run`` becomes its run directory
    (:func:`cnnlab.runs.pretrained_run`: ``runs/pretrained/tv-NAME-WEIGHTS``, made once); ``needs_images``: the
    flag that must then give image files (a pretrained model has no test set here)."""
    if a.run.startswith("tv:"):
        if a.pretrained is None:
            raise BadInput(f"{a.run} has random weights; add --pretrained [WEIGHTS] for torchvision's published ones")
        if needs_images is not None and not getattr(a, needs_images.lstrip("-"), None):
            raise BadInput(f"{a.run} --pretrained has no test set here (its weights were trained on ImageNet); give "
                           f"image files with {needs_images} FILE...")
        from cnnlab.runs import pretrained_run

        a.run = str(pretrained_run(a.run, a.pretrained))
    elif a.pretrained is not None:
        raise BadInput(f"--pretrained applies to tv:NAME; the run {a.run} brings its own weights")
