"""Running the CLI in-process and checking its one-line errors (shared by the CLI tests)."""

from __future__ import annotations

from cnnlab.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``cnnlab *argv``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> str:
    """``err`` is exactly one non-empty line containing every needle; returns it."""
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
