"""Size limits from the environment, and sizes as messages show them."""

from __future__ import annotations

import pytest

from cnnlab._limits import format_bytes, parse_size, size_from_env
from cnnlab.errors import CnnlabError


def test_sizes_from_the_environment(monkeypatch):
    monkeypatch.delenv("CNNLAB_TEST_LIMIT", raising=False)
    assert size_from_env("CNNLAB_TEST_LIMIT", 123) == 123
    for raw, expected in [("2048", 2048), ("512M", 512 << 20), ("1.5G", 3 << 29), ("4 GiB", 4 << 30), ("8k", 8192)]:
        monkeypatch.setenv("CNNLAB_TEST_LIMIT", raw)
        assert size_from_env("CNNLAB_TEST_LIMIT", 1) == expected, raw
    for raw in ("0", "-5", "12 parsecs", "1e9"):
        monkeypatch.setenv("CNNLAB_TEST_LIMIT", raw)
        with pytest.raises(CnnlabError, match=r"\$CNNLAB_TEST_LIMIT=.*give a positive number of bytes"):
            size_from_env("CNNLAB_TEST_LIMIT", 1)
    assert parse_size("100M", base=1000) == 100_000_000 and parse_size("64MP", base=1000) == 64_000_000


def test_sizes_as_messages_show_them():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 4 << 30, 24.1 * 2**30, 2**64 - 1)] == [
        "0 bytes", "1023 bytes", "1.00 KiB", "1.50 KiB", "4.00 GiB", "24.1 GiB", "16.0 EiB"]
