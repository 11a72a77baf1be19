"""The lecture report's machinery: verdicts are decided by the Section methods, a check that raises fails alone,
the page and files are written from the checks, and the command's exit codes (1 if a check failed, 2 bad input)."""

from __future__ import annotations

import json

import pytest

from cnnlab.cli import main
from cnnlab.lecture import report
from cnnlab.lecture.checks import Section


@pytest.fixture
def section(tmp_path):
    return Section("demo", "A demo", tmp_path / "figures")


def test_verdicts(section):
    assert section.exact("equal", 4640, 4640, command="c").verdict == "reproduced"
    assert section.exact("differs, unexplained", 4640, 4641, command="c").verdict == "failed"
    assert section.exact("differs, explained", 1_679_082, 1_677_674, command="c", differs="Keras").verdict == "explained"
    assert section.within("close", 0.935, 0.94, tolerance=0.01, command="c").verdict == "within"
    assert section.within("far", 0.935, 0.90, tolerance=0.01, command="c").verdict == "failed"
    assert section.within("relative", 60e6, 61e6, tolerance=0.05, relative=True, command="c").tolerance == "±5%"
    assert section.cited("ImageNet", "3.57% top-5", why="needs ImageNet").verdict == "cited"
    assert [c.verdict for c in section.checks] == ["reproduced", "failed", "explained", "within", "failed", "within",
                                                   "cited"]


def test_a_check_that_raises_fails_alone(section):
    assert section.exact("boom", 1, lambda: 1 / 0, command="c") is None
    assert section.exact("fine", 1, lambda: 1, command="c").verdict == "reproduced"
    boom = section.checks[0]
    assert boom.verdict == "failed" and boom.explanation == "failed: ZeroDivisionError: division by zero"


def test_values_are_shown_compactly():
    assert report._fmt(8_590_065_664) == "8,590,065,664" and report._fmt(0.93512) == "0.9351"
    assert report._fmt([[12, 12, 17], [10, 17, 19]]) == "[12, 12, 17; 10, 17, 19]"
    assert report._fmt({"params": 0.123, "ok": True}) == "{params: 0.123, ok: True}"
    assert report._fmt(list(range(20))) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (8 more)]"
    assert report._fmt(None) == "" and report._fmt("text") == "text"


def _demo(s, ctx):
    s.exact("two", 2, lambda: 1 + 1, command="cnnlab conv --example sharpen")
    if ctx.budget == "quick":
        raise RuntimeError("the section stops here")


def test_the_report_and_its_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "SECTIONS", [("demo", "A demo", _demo)])
    out = tmp_path / "lecture"
    assert main(["lecture", "--out", str(out)]) == 0
    d = json.loads((out / "lecture.json").read_text())
    assert d["scoreboard"] == {"reproduced": 1} and d["sections"][0]["checks"][0]["measured"] == 2
    page = (out / "index.html").read_text()
    assert "A demo" in page and "reproduced" in page and "<script" not in page and "http" not in page
    assert "| two | 2 | 2 | reproduced |" in (out / "lecture.md").read_text()
    assert main(["lecture", "--out", str(out), "--budget", "quick"]) == 1  # a section that raised: one failed check
    d = json.loads((out / "lecture.json").read_text())
    assert d["scoreboard"] == {"reproduced": 1, "failed": 1}
    assert "failed: RuntimeError: the section stops here" in capsys.readouterr().out


def test_bad_input_is_exit_2(tmp_path, capsys):
    assert main(["lecture", "--out", str(tmp_path / "x"), "--section", "nope"]) == 2
    assert "unknown section 'nope'; valid: convolution" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
