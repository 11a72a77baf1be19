"""The resumable downloader and the archive unpacker, against a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest

from cnnlab.data.download import (ArchiveError, DownloadError, download, extract_archive, mirrored, part_path,
                                  url_name)
from tests.data.http_server import local_server

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with local_server() as s:
        s.files["data.bin"] = PAYLOAD
        yield s


def test_download_checks_md5_and_leaves_no_part_file(server, tmp_path):
    dest = download(server.url("data.bin"), tmp_path / "data.bin", md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    server.requests.clear()
    download(server.url("data.bin"), dest, md5=MD5, progress=False)  # present and right: nothing fetched
    assert server.requests == []


def test_a_cut_download_keeps_its_bytes_and_resumes_with_range(server, tmp_path):
    server.cut["data.bin"] = 300_000
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url("data.bin"), dest, md5=MD5, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "run the command again to resume" in msg and str(part_path(dest)) in msg
    assert part_path(dest).stat().st_size == 300_000 and not dest.exists()
    del server.cut["data.bin"]
    server.requests.clear()
    download(server.url("data.bin"), dest, md5=MD5, progress=False)
    assert server.requests == [("data.bin", "bytes=300000-")]
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()


def test_a_server_that_ignores_range_starts_the_file_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(b"x" * 1000)  # wrong bytes: a server without ranges sends everything
    server.no_range.add("data.bin")
    download(server.url("data.bin"), dest, md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_a_complete_part_file_is_finished_without_data(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(PAYLOAD)
    download(server.url("data.bin"), dest, md5=MD5, progress=False)  # the server answers 416
    assert dest.read_bytes() == PAYLOAD


def test_a_wrong_checksum_removes_the_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url("data.bin"), dest, md5="0" * 32, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "md5" in msg and MD5 in msg and "0" * 32 in msg and "removed" in msg
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_as_torch_hub_checks_it(server, tmp_path):
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    download(server.url("data.bin"), tmp_path / "a.bin", sha256_prefix=prefix, progress=False)
    with pytest.raises(DownloadError, match="sha256"):
        download(server.url("data.bin"), tmp_path / "b.bin", sha256_prefix="deadbeef", progress=False)
    assert not (tmp_path / "b.bin").exists() and not part_path(tmp_path / "b.bin").exists()


def test_a_missing_file_and_no_server_are_one_line_errors(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("nothing.bin"), tmp_path / "n.bin", progress=False)
    with pytest.raises(DownloadError, match="cannot download http://127.0.0.1:9/x.bin"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", progress=False, timeout=5)


def test_a_size_over_the_limit_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="over the .* limit"):
        download(server.url("data.bin"), tmp_path / "d.bin", max_bytes=1000, progress=False)


def test_mirror_replaces_the_folder_of_the_url(monkeypatch):
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert url_name(url) == "cifar-10-binary.tar.gz"
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    assert mirrored(url) == url
    assert mirrored(url, "http://127.0.0.1:1/m/") == "http://127.0.0.1:1/m/cifar-10-binary.tar.gz"
    monkeypatch.setenv("CNNLAB_MIRROR", "http://lab/m")
    assert mirrored(url) == "http://lab/m/cifar-10-binary.tar.gz"


# ---------------------------------------------------------------- archives


def _tar(path, members):
    """members: (name, bytes | None for a folder | ("link", target))"""
    with tarfile.open(path, "w:gz") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = data[1]
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def test_tar_and_zip_unpack(tmp_path):
    _tar(tmp_path / "a.tar.gz", [("top", None), ("top/a.txt", b"hello"), ("./top/sub/b.txt", b"x" * 10)])
    out = extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert (out / "top/a.txt").read_bytes() == b"hello" and (out / "top/sub/b.txt").read_bytes() == b"x" * 10
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("train/cat.1.jpg", b"cat")
    out = extract_archive(tmp_path / "a.zip", tmp_path / "zout")
    assert (out / "train/cat.1.jpg").read_bytes() == b"cat"


@pytest.mark.parametrize("members, why", [
    ([("../evil.txt", b"x")], "path traversal"),
    ([("/etc/evil.txt", b"x")], "path traversal"),
    ([("ok/../../evil.txt", b"x")], "path traversal"),
    ([("a.txt", b"x"), ("link", ("link", "/etc/passwd"))], "is a link"),
])
def test_tar_refusals_leave_nothing(tmp_path, members, why):
    _tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ArchiveError, match=why):
        extract_archive(tmp_path / "bad.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_traversal_link_and_bomb_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as z:
        z.writestr("../evil.txt", b"x")
    with pytest.raises(ArchiveError, match="path traversal"):
        extract_archive(tmp_path / "t.zip", tmp_path / "o1")
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as z:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="is a link"):
        extract_archive(tmp_path / "l.zip", tmp_path / "o2")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * (4 << 20))  # 4 MiB of zeros: a few KiB compressed
    with pytest.raises(ArchiveError, match="archive bomb"):
        extract_archive(tmp_path / "bomb.zip", tmp_path / "o3", max_bytes=1 << 20)
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_a_truncated_archive_is_an_error(tmp_path):
    _tar(tmp_path / "a.tar.gz", [("a.bin", bytes(range(256)) * 2000)])
    data = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="damaged or truncated"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()
