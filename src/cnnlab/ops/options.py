"""Which options go with which 2D op, checked together before :func:`~cnnlab.ops.trace2d` runs: the rules
every face (``cnnlab conv``, a web explorer) applies the same way.

- ``padding_mode`` and ``value`` apply to ``correlate``/``convolve``, not to pooling;
- ``kernel_size``, ``ceil_mode`` and ``count_include_pad`` apply to pooling (``max``/``avg``) only;
- ``correlate``/``convolve`` need a kernel;
- a worked example (:mod:`cnnlab.ops.examples`) gives the input and the kernel, so neither may be given with it.

:func:`conv_options` builds ``trace2d``'s keyword options from the values given; :func:`conv_setup` also
resolves an example. A broken rule raises :class:`OptionsError`, whose message names the Python parameters;
:meth:`OptionsError.message` says the same with each parameter called what a face calls it.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from cnnlab.errors import CnnlabError
from cnnlab.ops.examples import EXAMPLES, Example
from cnnlab.ops.steps import OPS

__all__ = ["ConvSetup", "OptionsError", "conv_options", "conv_setup", "parse_ints", "parse_padding"]

_POOLS = ("max", "avg")
_CONV_ONLY = ("padding_mode", "value")
_POOL_ONLY = ("kernel_size", "ceil_mode", "count_include_pad")


class OptionsError(CnnlabError):
    """Options of a 2D op that do not go together, or one that is missing.

    ``params``: the parameters the message names. ``str(error)`` names them as Python does;
    ``error.message(names)`` names each as ``names`` maps it (``{"kernel_size": "--size"}``), the others as Python.
    """

    def __init__(self, template: str, *params: str) -> None:
        self.template, self.params = template, params
        super().__init__(self.message())

    def message(self, names: Mapping[str, str] | None = None) -> str:
        names = names or {}
        return self.template.format_map({p: names.get(p, p) for p in self.params})


def _literal(value: Any) -> str:
    """``value`` as text inside a message template (braces doubled)."""
    return str(value).replace("{", "{{").replace("}", "}}")


def _listed(params: list[str]) -> str:
    """``{a}``, ``{a} and {b}``, ``{a}, {b} and {c}``, and the verb that goes with them."""
    slots = [f"{{{p}}}" for p in params]
    text = slots[0] if len(slots) == 1 else ", ".join(slots[:-1]) + " and " + slots[-1]
    return text + (" applies" if len(slots) == 1 else " apply")


def parse_ints(text: str | None, param: str) -> int | tuple[int, ...] | None:
    """A size, stride or dilation as typed: ``"3"`` -> 3, ``"3,2"`` or ``"3x2"`` -> (3, 2); ``None`` or ``""``
    -> ``None``. Raises :class:`OptionsError` naming ``param``."""
    if text is None or text == "":
        return None
    try:
        v = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise OptionsError(f"{{{param}}} must be an integer or comma-separated integers; got {_literal(repr(text))}",
                           param) from None
    return v[0] if len(v) == 1 else v


def parse_padding(text: str | None, param: str = "padding") -> str | int | tuple[int, ...] | None:
    """A padding as typed: ``valid``, ``same`` or ``full`` as they are, else :func:`parse_ints`."""
    return text if text in ("valid", "same", "full") else parse_ints(text, param)


def _check_op(op: str) -> None:
    if op not in OPS:
        raise OptionsError(f"{{op}} must be one of {', '.join(OPS)}; got {_literal(repr(op))}", "op")


def conv_options(op: str, *, kernel, kernel_size=None, stride=None, padding=None, dilation=None,
                 padding_mode: str | None = None, value: float | None = None, ceil_mode: bool = False,
                 count_include_pad: bool = True, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`~cnnlab.ops.trace2d`'s keyword options for ``op``: ``defaults`` (an example's options), updated by
    the values given here (None, ``ceil_mode=False`` and ``count_include_pad=True`` mean "not given").

    ``kernel``: the kernel matrix, or None; only whether there is one is looked at (``correlate``/``convolve``
    need one). The values themselves are checked by ``trace2d``. Raises :class:`OptionsError` when an option is
    set that ``op`` does not take, or ``op`` is unknown.
    """
    _check_op(op)
    given = {"kernel_size": kernel_size, "stride": stride, "padding": padding, "dilation": dilation,
             "padding_mode": padding_mode, "value": value}
    options = dict(defaults or {})
    options.update({k: v for k, v in given.items() if v is not None})
    if ceil_mode:
        options["ceil_mode"] = True
    if not count_include_pad:
        options["count_include_pad"] = False
    if op in _POOLS:
        wrong = [k for k in _CONV_ONLY if k in options]
        if wrong:
            raise OptionsError(f"{_listed(wrong)} to correlate/convolve, not {op} pooling", *wrong)
    else:
        is_set = {"kernel_size": "kernel_size" in options, "ceil_mode": bool(options.get("ceil_mode")),
                "count_include_pad": options.get("count_include_pad", True) is False}
        wrong = [k for k in _POOL_ONLY if is_set[k]]
        if wrong:
            raise OptionsError(f"{_listed(wrong)} to pooling ({{op}} max or avg), not {op}", *wrong, "op")
        if kernel is None:
            raise OptionsError(f"{{op}} {op} needs {{kernel}} (a matrix)", "op", "kernel")
    return options


class ConvSetup(NamedTuple):
    """What :func:`~cnnlab.ops.trace2d` is called with: ``trace2d(x, kernel, op, **options)``; ``example``: the
    worked example they came from, or None."""

    x: Any
    kernel: Any
    op: str
    options: dict[str, Any]
    example: Example | None


def conv_setup(x=None, kernel=None, op: str | None = None, *, example: str | None = None, kernel_size=None,
               stride=None, padding=None, dilation=None, padding_mode: str | None = None, value: float | None = None,
               ceil_mode: bool = False, count_include_pad: bool = True) -> ConvSetup:
    """The input, kernel, op and options of one 2D op: given directly (``x`` and, for ``correlate``/``convolve``,
    ``kernel``), or the worked example named ``example`` (its input, kernel, op and options; ``op`` and the
    options given here override its own). ``op`` default: the example's, else ``correlate``.

    The options are :func:`conv_options`'s. Raises :class:`OptionsError` for an unknown example, an example
    with ``x`` or ``kernel`` too, neither an example nor ``x``, and what :func:`conv_options` refuses.
    """
    ex = None
    if example is not None:
        if example not in EXAMPLES:
            raise OptionsError(f"unknown example {_literal(repr(example))}; choose from {', '.join(EXAMPLES)}")
        ex = EXAMPLES[example]
        extra = [p for p, v in (("x", x), ("kernel", kernel)) if v is not None]
        if extra:
            drop = " and ".join(f"{{{p}}}" for p in extra)
            raise OptionsError(f"{{example}} {_literal(repr(example))} gives the input and the kernel; drop {drop}",
                               "example", *extra)
        x, kernel = ex.input, ex.kernel
    elif x is None:
        raise OptionsError("give {x} (the input matrix) or {example} (a worked example's name)", "x", "example")
    op = op if op is not None else ex.op if ex is not None else "correlate"
    options = conv_options(op, kernel=kernel, kernel_size=kernel_size, stride=stride, padding=padding,
                           dilation=dilation, padding_mode=padding_mode, value=value, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad, defaults=None if ex is None else ex.options)
    return ConvSetup(x, kernel, op, options, ex)
