"""``cnnlab explore RUN``: the run's model in the browser (``explore.serve`` over an ``ExploreSession``)."""

from __future__ import annotations

import argparse

from cnnlab.cli._types import _positive_int, add_pretrained_arg, pretrained_face

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("explore", help="open a trained run in the browser: maps, receptive fields, attributions",
                              description="Serve an interactive, offline page over a run directory: draw or pick an "
                                          "input, see every layer's maps, a unit's receptive fields, the convolution "
                                          "step by step, where the model looks, what it learned and its anatomy.")
    p.add_argument("run", metavar="RUN|tv:NAME",
                   help="a run directory (trained, transferred or compressed), or tv:NAME with --pretrained")
    add_pretrained_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=_positive_int, default=8541, help="TCP port (8541)")
    p.add_argument("--open", action=argparse.BooleanOptionalAction, default=False,
                   help="open the page in the default browser")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu)")
    p.add_argument("--data-dir", help="where the run's dataset is (default: as recorded)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.explore import ExploreSession
    from cnnlab.explore.server import check_address, serve
    from cnnlab.train import resolve_device

    check_address(a.host, a.port)  # before the run loads: a port in use is said at once
    pretrained_face(a)
    session = ExploreSession(a.run, device=str(resolve_device(a.device)), data_dir=a.data_dir)
    try:
        serve(session, host=a.host, port=a.port, open_browser=a.open)
    finally:
        session.close()
    return 0
