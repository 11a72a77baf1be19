"""Downloading and unpacking untrusted files: the one downloader every dataset and weights file goes through.

:func:`download` fetches a URL into a file with what ``torch.hub.download_url_to_file`` lacks: a killed
download resumes (the bytes so far are kept in ``FILE.part`` and an HTTP ``Range`` request asks for the
rest; a server that ignores it starts the file again), and one process writes a given file at a time
(an advisory lock on the ``.part`` file). The file is size-checked against a limit from what the server
declares and again while reading, checksummed (an md5 as datasets publish them, or a SHA-256 prefix as
``torch.hub``'s ``check_hash``), and only then renamed to its name; a file with the wrong checksum is
removed. A progress bar (tqdm) on stderr.

:func:`extract_archive` unpacks a ``.tar(.gz)`` or ``.zip`` in one pass into a new folder, refusing
before anything lands outside it: absolute paths and ``..`` (path traversal), links and devices, more
than :data:`MAX_MEMBERS` entries or :data:`MAX_EXTRACT_BYTES` bytes (``$CNNLAB_MAX_EXTRACT_BYTES``; a zip
bomb), counted from what each member declares and checked again while writing.

A mirror (``--mirror URL`` or ``$CNNLAB_MIRROR``) replaces the folder of every URL: a file ``NAME`` is then
fetched from ``MIRROR/NAME`` (a lab's server, or the tests' local one).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm import tqdm

from cnnlab._io import file_digest
from cnnlab._limits import format_bytes, size_from_env
from cnnlab.errors import CnnlabError

__all__ = ["DownloadError", "ArchiveError", "MIRROR_ENV", "MAX_DOWNLOAD_BYTES", "MAX_EXTRACT_BYTES",
           "MAX_EXTRACT_ENV", "MAX_MEMBERS", "mirrored", "url_name", "download", "extract_archive", "part_path"]

MIRROR_ENV = "CNNLAB_MIRROR"
#: The largest download accepted (the largest archive cnnlab fetches, Oxford pets' images, is 755 MiB).
MAX_DOWNLOAD_BYTES = 8 << 30
#: The most bytes an archive may unpack to (``$CNNLAB_MAX_EXTRACT_BYTES``) and the most entries it may hold.
MAX_EXTRACT_BYTES = 16 << 30
MAX_EXTRACT_ENV = "CNNLAB_MAX_EXTRACT_BYTES"
MAX_MEMBERS = 200_000
_CHUNK = 1 << 20
_USER_AGENT = "cnnlab (https://github.com/; python urllib)"


class DownloadError(CnnlabError):
    """A download failed (no network, a refused or cut connection) or gave the wrong file (checksum, size)."""


class ArchiveError(CnnlabError):
    """An archive that cannot be read, or that was refused (path traversal, links, sizes)."""


def url_name(url: str) -> str:
    """The file name at the end of ``url`` (``https://x/y/cifar-10-binary.tar.gz`` -> ``cifar-10-binary.tar.gz``)."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def mirrored(url: str, mirror: str | None = None) -> str:
    """``url``, or the same file name under ``mirror`` (default ``$CNNLAB_MIRROR``) when one is set."""
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    base = base.strip()
    if not base:
        return url
    return base.rstrip("/") + "/" + url_name(url)


def part_path(dest: str | os.PathLike) -> Path:
    """Where the bytes of an unfinished download of ``dest`` are kept."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _check(path: Path, url: str, md5: str | None, sha256_prefix: str | None) -> None:
    """Raise :class:`DownloadError` (and remove ``path``) if its checksum differs from the published one."""
    for algorithm, want in (("md5", md5), ("sha256", sha256_prefix)):
        if want is None:
            continue
        got = file_digest(path, algorithm)
        if not got.startswith(want.lower()):
            path.unlink(missing_ok=True)
            shown = got if algorithm == "md5" else got[:len(want)]
            raise DownloadError(f"{url}: {algorithm} {shown} does not match the published {want}; the file was "
                                "removed (a corrupted download, a wrong mirror, or a changed file): run the command "
                                "again")


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256_prefix: str | None = None,
             max_bytes: int = MAX_DOWNLOAD_BYTES, progress: bool | None = None, timeout: float = 60.0,
             log: Callable[[str], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` (resumable; checksummed; renamed into place when complete) and return it.

    A ``dest`` already there with the right checksum is kept (nothing is fetched). ``md5``: the file's
    published md5; ``sha256_prefix``: the first hex digits of its SHA-256 (torch hub's file names carry
    them). ``progress``: a tqdm bar on stderr (default: when stderr is a terminal).

    Raises :class:`DownloadError` naming the URL: the network failed or the connection was cut (the bytes
    so far stay in ``dest.part``; the next call resumes), the server declares or sends more than
    ``max_bytes``, or the checksum differs (the file is removed).
    """
    dest = Path(dest)
    if dest.is_file():
        if md5 is None and sha256_prefix is None:
            return dest
        try:
            _check(dest, url, md5, sha256_prefix)
            return dest
        except DownloadError:
            (log or (lambda s: None))(f"{dest}: wrong checksum; downloading it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    show = sys.stderr.isatty() if progress is None else progress
    with open(part, "ab") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(f"{part}: another process is downloading this file now; wait for it to finish") from None
        offset = f.seek(0, os.SEEK_END)
        try:
            _fetch(url, f, part, offset, max_bytes=max_bytes, show=show, timeout=timeout, name=dest.name)
        except BaseException:
            f.flush()
            if part.is_file() and part.stat().st_size == 0:  # nothing to resume: leave nothing behind
                part.unlink()
            raise
        f.flush()
        os.fsync(f.fileno())
        _check(part, url, md5, sha256_prefix)
        os.replace(part, dest)
    return dest


def _fetch(url: str, f, part: Path, offset: int, *, max_bytes: int, show: bool, timeout: float, name: str) -> None:
    """Append the bytes of ``url`` after ``offset`` to the open file ``f`` (from 0 if the server does not resume)."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    kept = f"the {format_bytes(offset)} so far are kept in {part}: run the command again to resume" if offset else ""
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at the end: the .part file is the whole file
            return
        raise DownloadError(f"cannot download {url}: {_reason(e)}" + (f"; {kept}" if kept else "")) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DownloadError(f"cannot download {url}: {_reason(e)}" + (f"; {kept}" if kept else "")) from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and status == 206:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
            if start != str(offset):
                raise DownloadError(f"cannot resume {url}: the server sent bytes from {start or '?'}, not {offset}; "
                                    f"remove {part} to start again")
        elif offset:  # 200: the server sends the whole file again
            f.seek(0)
            f.truncate()
            offset = 0
        total = None if length is None else offset + length
        if total is not None and total > max_bytes:
            raise DownloadError(f"{url} is {format_bytes(total)}, over the {format_bytes(max_bytes)} limit for this "
                                "file; refused")
        received = offset
        bar = None
        if show:
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                       file=sys.stderr, leave=False)
        try:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    f.flush()
                    raise DownloadError(f"download of {url} was cut at {format_bytes(received)}"
                                        + (f" of {format_bytes(total)}" if total else "") + f" ({_reason(e)}); the "
                                        f"bytes so far are kept in {part}: run the command again to resume") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    f.flush()
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"{url} sent more than the {format_bytes(max_bytes)} limit for this file; "
                                        "refused and removed")
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received < total:
            f.flush()
            raise DownloadError(f"download of {url} was cut at {format_bytes(received)} of {format_bytes(total)}; "
                                f"the bytes so far are kept in {part}: run the command again to resume")


# ---------------------------------------------------------------- archives


def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The relative path a member may be written to; None for the archive's own root (``./``); an
    :class:`ArchiveError` for an absolute path or one that climbs out (``..``)."""
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or ".." in parts or (parts and ":" in parts[0]):
        raise ArchiveError(f"{archive}: member {name!r} points outside the folder it is unpacked into (path "
                           "traversal); refused, nothing was kept")
    return PurePosixPath(*parts) if parts else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class _Budget:
    def __init__(self, archive: Path, limit: int) -> None:
        self.archive, self.limit, self.bytes, self.members = archive, limit, 0, 0

    def add(self, size: int, what: str) -> None:
        self.members += 1
        self.bytes += max(size, 0)
        if self.members > MAX_MEMBERS:
            raise ArchiveError(f"{self.archive}: more than {MAX_MEMBERS:,} entries; refused as a likely archive bomb")
        if self.bytes > self.limit:
            raise ArchiveError(f"{self.archive}: unpacks to more than {format_bytes(self.limit)} (at {what}); refused "
                               f"as a likely archive bomb (${MAX_EXTRACT_ENV} raises the limit)")


def _copy(src, target: Path, declared: int, archive: Path, name: str) -> None:
    """Copy at most ``declared`` bytes from ``src`` into ``target``; more is an :class:`ArchiveError`."""
    written = 0
    with open(target, "wb") as out:
        while block := src.read(_CHUNK):
            written += len(block)
            if written > declared:
                raise ArchiveError(f"{archive}: member {name!r} holds more than the {declared} bytes it declares; "
                                   "refused")
            out.write(block)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *, max_bytes: int | None = None) -> Path:
    """Unpack ``archive`` (``.tar``, ``.tar.gz``/``.tgz``, ``.zip``) into the new folder ``dest`` (which must
    not exist: the caller unpacks into a temporary folder and renames it). Regular files and folders only:
    a link, a device, a path outside ``dest`` or more than ``max_bytes`` (default :data:`MAX_EXTRACT_BYTES`
    or ``$CNNLAB_MAX_EXTRACT_BYTES``) is an :class:`ArchiveError`, and ``dest`` is removed."""
    archive, dest = Path(archive), Path(dest)
    limit = max_bytes if max_bytes is not None else size_from_env(MAX_EXTRACT_ENV, MAX_EXTRACT_BYTES, ArchiveError)
    budget = _Budget(archive, limit)
    dest.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, budget)
        else:
            _extract_tar(archive, dest, budget)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _write_member(dest: Path, rel: PurePosixPath | None, is_dir: bool, open_member: Callable, size: int,
                  archive: Path, name: str) -> None:
    """One checked member of an archive into ``dest``: a folder made, or a file copied from ``open_member()``
    (at most its declared ``size``); ``rel`` None (the archive's top folder itself) writes nothing."""
    if rel is None:
        return
    target = dest / rel
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = open_member()
    if src is None:
        raise ArchiveError(f"{archive}: member {name!r} cannot be read")
    with src:
        _copy(src, target, size, archive, name)


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArchiveError(f"{archive}: not a readable .tar.gz or .zip archive ({first.rstrip(':')})") from None
    with tar:
        try:
            for m in tar:
                rel = _member_path(m.name, archive)
                if m.issym() or m.islnk():
                    raise ArchiveError(f"{archive}: member {m.name!r} is a link; refused, nothing was kept")
                if not (m.isfile() or m.isdir()):
                    raise ArchiveError(f"{archive}: member {m.name!r} is not a file or folder; refused, nothing was "
                                       "kept")
                budget.add(m.size if m.isfile() else 0, m.name)
                _write_member(dest, rel, m.isdir(), lambda m=m: tar.extractfile(m), m.size, archive, m.name)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise ArchiveError(f"{archive}: a damaged or truncated archive ({_first_line(e)})") from None


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        z = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{archive}: not a readable zip archive ({_first_line(e)})") from None
    with z:
        infos = z.infolist()
        for info in infos:  # every member checked before anything is written
            _member_path(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"{archive}: member {info.filename!r} is a link; refused, nothing was kept")
            budget.add(info.file_size, info.filename)
        try:
            for info in infos:
                _write_member(dest, _member_path(info.filename, archive), info.is_dir(),
                              lambda info=info: z.open(info), info.file_size, archive, info.filename)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
            raise ArchiveError(f"{archive}: a damaged archive ({_first_line(e)})") from None
