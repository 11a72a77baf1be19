"""Plain helpers for the lecture tests."""

from __future__ import annotations

from cnnlab.lecture.checks import VERDICTS


def assert_sections_sound(report: dict, keys: list[str]) -> list[dict]:
    """The report has exactly ``keys`` as its sections, every check a known verdict and none failed; returns
    every check."""
    assert [s["key"] for s in report["sections"]] == keys
    checks = [c for s in report["sections"] for c in s["checks"]]
    assert all(c["verdict"] in VERDICTS for c in checks)
    failed = [f"{c['section']}: {c['statement']}: {c['explanation']}" for c in checks if c["verdict"] == "failed"]
    assert not failed, failed
    return checks
