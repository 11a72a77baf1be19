"""``cnnlab compress RUN``: one method on a trained run (``compress.run.compress_run``), or ``--sweep``
(``compress.sweep.compress_sweep``)."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli._types import BadInput, _finite_float, _non_negative_int, _positive_int

__all__ = ["add_parser", "run"]

#: The settings flags: each one's dest is a keyword of the ``compress_<method>`` functions that take it (which
#: those are comes from their signatures, :func:`_compress_settings`); the values are the flags' argparse options.
_SETTING_FLAGS: dict[str, dict] = {
    "sparsity": dict(type=_finite_float, help="prune: fraction of weights (or, --structured, of channels) "
                                              "removed, in (0, 1) (0.9)"),
    "scope": dict(choices=("lamp", "global", "layer"),
                  help="prune: one threshold on LAMP scores (Lee et al. 2021), on plain magnitudes, or the same "
                       "sparsity in each layer (default: lamp; --structured: layer)"),
    "steps": dict(type=_positive_int, help="prune: iterative pruning in N steps, fine-tuning between (1)"),
    "structured": dict(action="store_true", default=None,
                       help="prune: remove whole conv channels (smaller and faster) instead of single weights"),
    "bits": dict(type=int, help="cluster: 2..8 (4); inq: bits per weight (5)"),
    "mode": dict(choices=("bwn", "xnor"), help="binarize: binary weights (bwn) or weights and activations (xnor) "
                                               "(bwn)"),
    "keep_first_last": dict(action=argparse.BooleanOptionalAction, default=None,
                            help="binarize: keep the first and last layers in float (default: yes, as XNOR-Net)"),
}


def _compress_settings() -> dict[str, tuple[str, ...]]:
    """Settings flag (its dest) -> the methods that take it, read from ``compress.run.method_settings``."""
    from cnnlab.compress.run import method_settings

    table = method_settings()
    return {key: tuple(m for m, keys in table.items() if key in keys) for key in _SETTING_FLAGS}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compress", help="prune, quantize, share, binarize a trained run; measure size, speed, accuracy",
        description="Apply one post-training compression method to a trained run and write a new run (OUT, "
                    "default RUN-METHOD-SETTINGS) with compression.json: stored bytes (packed, then xz), test "
                    "accuracy, CPU latency at batch 1 and 256, each beside the float model's. The input run is "
                    "only read. --sweep runs every method over a range of settings and writes a table and a "
                    "Pareto plot.",
        epilog="example: cnnlab compress runs/experiment-fmnist/fmnist-cnn --method prune --sparsity 0.9")
    _add_compress_args(p)
    p.set_defaults(func=run)


def _add_compress_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.compress.run import METHODS

    p.add_argument("run", help="a trained run directory (cnnlab train / experiment)")
    p.add_argument("--method", choices=tuple(METHODS),
                   help="; ".join(f"{k}: {v}" for k, (_, v) in METHODS.items()))
    p.add_argument("--sweep", action="store_true", help="every method over a range of settings (table + Pareto plot)")
    s = p.add_argument_group("settings (each for the methods named)")
    for key, options in _SETTING_FLAGS.items():
        s.add_argument("--" + key.replace("_", "-"), **options)
    s.add_argument("--finetune-epochs", type=_non_negative_int,
                   help="retraining epochs with the run's recipe (prune 2, cluster 1, inq 1 per step, binarize 3)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="the new run (default: RUN-METHOD-SETTINGS beside RUN; --sweep: RUN-sweep)")
    o.add_argument("--overwrite", action="store_true", help="replace --out if it exists (--sweep: redo finished rows)")
    o.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for compressing and latency (2)")
    o.add_argument("--subset", type=_positive_int, help="fine-tune and calibrate on N training images (quick look)")
    o.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency measurement")
    o.add_argument("--json", action="store_true", help="print compression.json (--sweep: the rows), nothing else")


def run(a: argparse.Namespace) -> int:
    from cnnlab.compress import CompressError
    from cnnlab.compress.run import METHODS, compress_run
    from cnnlab.compress.sweep import compress_sweep, format_sweep

    log = (lambda s: print(s, file=sys.stderr)) if a.json else print
    given = {key: getattr(a, key) for key in _SETTING_FLAGS if getattr(a, key) is not None}
    common = {"threads": a.threads, "subset": a.subset, "measure": a.latency, "log": log}
    try:
        if a.sweep:
            if a.method or given or a.finetune_epochs is not None:
                raise BadInput("--sweep runs every method with its own settings; drop --method and the settings")
            result = compress_sweep(a.run, a.out, overwrite=a.overwrite, **common)
            print(json.dumps(result["rows"], indent=2) if a.json else format_sweep(result))
            return 0
        if not a.method:
            raise BadInput(f"give --method ({', '.join(METHODS)}) or --sweep")
        for key, methods in _compress_settings().items():
            if key in given and a.method not in methods:
                raise BadInput(f"--{key.replace('_', '-')} is a setting of {' and '.join(methods)}, "
                               f"not of --method {a.method}")
        record = compress_run(a.run, a.method, settings=given, out=a.out, finetune_epochs=a.finetune_epochs,
                              overwrite=a.overwrite, **common)
    except CompressError as e:
        raise BadInput(str(e)) from None
    if a.json:
        print(json.dumps(record, indent=2))
    return 0
