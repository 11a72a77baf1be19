"""Stored sizes that are real bytes: the artifact (safetensors, then xz) and the helpers methods pack with.

The artifact of a compressed model is one file, ``model.cnnz``: the method's tensors written as
safetensors (with ``meta`` as JSON in its header), then compressed with xz (LZMA2, Python's ``lzma``):
packed bits, codebooks and sparse indices are what is on disk, and a standard codec takes what
redundancy is left. Reading it back needs no pickle.

The file may come from anywhere, so :func:`read_artifact` decompresses it as a stream: the header first
(at most :data:`MAX_HEADER_BYTES`), checked, then exactly the tensor bytes it states, at most
:data:`MAX_ARTIFACT_BYTES` (1 GiB, or ``$CNNLAB_MAX_ARTIFACT_BYTES``). A 600 KB file that would
decompress to 4 GiB is refused before its data is decompressed.
"""

from __future__ import annotations

import functools
import json
import lzma
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from cnnlab._io import atomic_write_bytes
from cnnlab.compress.base import CompressError
from cnnlab._limits import format_bytes as _fmt
from cnnlab._limits import size_from_env

__all__ = ["ARTIFACT", "MAX_ARTIFACT_BYTES", "MAX_ARTIFACT_ENV", "MAX_HEADER_BYTES", "XZ_MEMLIMIT", "pack_bits",
           "unpack_bits", "write_artifact", "read_artifact", "max_artifact_bytes", "artifact_bytes", "xz_size"]

ARTIFACT = "model.cnnz"
_META_KEY = "cnnlab_meta"
_XZ = {"format": lzma.FORMAT_XZ, "preset": 6}

#: The most tensor bytes an artifact's header may state (an artifact holds about its float model's bytes or
#: fewer: fmnist-cnn's model.safetensors is 6.7 MB); ``$CNNLAB_MAX_ARTIFACT_BYTES`` overrides it.
MAX_ARTIFACT_BYTES = 1 << 30
MAX_ARTIFACT_ENV = "CNNLAB_MAX_ARTIFACT_BYTES"
#: The most bytes its JSON header may take (tensor names, shapes, offsets and the method's meta).
MAX_HEADER_BYTES = 8 << 20
#: The most memory the xz decoder may take (its dictionary, which the stream declares: preset 6 needs
#: 9 MiB, ``xz -9`` 65 MiB).
XZ_MEMLIMIT = 256 << 20
_CHUNK = 1 << 16  # compressed bytes read at a time
_PIECE = 1 << 22  # the most decompressed bytes asked of the decoder at a time

#: safetensors dtype -> torch dtype, for every dtype :func:`read_artifact` reads.
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
    **{name: getattr(torch, attr) for name, attr in (("U64", "uint64"), ("U32", "uint32"), ("U16", "uint16"),
                                                      ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
       if hasattr(torch, attr)},
}


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer ``codes`` (any shape, each < 2**bits) into a flat uint8 tensor,
    ``bits`` bits per code, little-endian within each byte; ``ceil(numel * bits / 8)`` bytes."""
    if not 1 <= bits <= 8:
        raise CompressError(f"bits must be 1..8 to pack; got {bits}")
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise CompressError(f"codes must lie in [0, {2**bits - 1}] for {bits} bits; got "
                            f"[{int(flat.min())}, {int(flat.max())}]")
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)  # the bits of each code, lowest first
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int64)).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: ``numel`` codes as int64, flat. ``packed`` must be uint8 of exactly
    ``ceil(numel * bits / 8)`` bytes, as :func:`pack_bits` wrote them (another length means the codes were
    packed with other bits or for another layer)."""
    if not 1 <= bits <= 8:
        raise CompressError(f"bits must be 1..8 to unpack; got {bits}")
    if packed.dtype != torch.uint8 or packed.numel() != -(-numel * bits // 8):
        raise CompressError(f"{packed.numel()} {str(packed.dtype).removeprefix('torch.')} values are not the "
                            f"{-(-numel * bits // 8)} bytes that {numel} codes of {bits} bits pack into")
    stream = ((packed.reshape(-1).to(torch.int64).unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1)
    stream = stream.reshape(-1)[: numel * bits].reshape(numel, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(1)


def _encode(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    raw = st_save(flat, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    return lzma.compress(raw, **_XZ)


def write_artifact(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """Write ``tensors`` + ``meta`` to ``path`` (atomically) as xz-compressed safetensors; return its bytes."""
    data = _encode(tensors, meta)
    atomic_write_bytes(path, data)
    return len(data)


def read_artifact(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and meta of an artifact written by :func:`write_artifact`, read as a stream: the
    header first (at most :data:`MAX_HEADER_BYTES`), checked (see :func:`_check_header`), then exactly
    the tensor bytes it states, after checking them against :func:`max_artifact_bytes`. So a small file
    that would decompress to gigabytes (an xz bomb) is refused before its data is decompressed. Any file
    that is not such an artifact (missing, empty, not xz, truncated, holding more or fewer bytes than its
    header states, a header that is not safetensors) raises :class:`CompressError`, one line naming it."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CompressError(f"{path}: no such artifact") from None
    except OSError as e:
        raise CompressError(f"{path}: cannot be read ({e.strerror or e})") from None
    with f:
        stream = _XzStream(f)
        try:
            if os.fstat(f.fileno()).st_size == 0:
                raise CompressError(f"{path}: empty file (0 bytes), not a cnnlab artifact")
            return _read_stream(path, stream)
        except lzma.LZMAError as e:
            if "memory usage limit" in str(e).lower():
                raise CompressError(f"{path}: its xz stream asks for more than {_fmt(XZ_MEMLIMIT)} of decoder memory "
                                    "(an artifact cnnlab wrote needs 9 MiB)") from None
            what = (f"corrupt xz data after {stream.produced} good bytes" if stream.produced
                    else "not an xz-compressed cnnlab artifact")
            raise CompressError(f"{path}: {what} ({e})") from None
        except OSError as e:
            raise CompressError(f"{path}: cannot be read ({e.strerror or e})") from None
        except MemoryError:
            raise CompressError(f"{path}: its tensors do not fit in memory") from None


def max_artifact_bytes() -> int:
    """The most tensor bytes :func:`read_artifact` decompresses: ``$CNNLAB_MAX_ARTIFACT_BYTES`` (bytes, or
    a number with K, M, G or T, e.g. ``2G``), else :data:`MAX_ARTIFACT_BYTES`."""
    return size_from_env(MAX_ARTIFACT_ENV, MAX_ARTIFACT_BYTES, CompressError)


class _XzStream:
    """The decompressed bytes of an open xz file, handed out in pieces of at most the size asked for;
    concatenated xz streams read as one, as :func:`lzma.decompress` reads them. ``truncated`` is set when
    the file ends inside a stream (the check of its data is at its end, so such a file is refused)."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self._dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
        self._input = b""  # read from the file, not yet given to the decompressor
        self.truncated = False
        self.produced = 0  # decompressed bytes handed out
        self.after_stream = False  # the file goes on after a stream that ended, and nothing came of it yet

    def piece(self, most: int) -> bytes:
        """The next 1 to ``most`` decompressed bytes; ``b""`` at the end of the file (or where it ends early)."""
        while True:
            if self._dec.eof:  # one stream ended (its check passed); another may follow
                rest = self._dec.unused_data or self._input or self._file.read(_CHUNK)
                if not rest:
                    return b""
                self._dec, self._input = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT), rest
                self.after_stream = True
            if self._dec.needs_input:
                data, self._input = self._input or self._file.read(_CHUNK), b""
                if not data:
                    self.truncated = True
                    return b""
            else:
                data = b""
            out = self._dec.decompress(data, max_length=most)
            if out:
                self.produced += len(out)
                self.after_stream = False
                return out

    def read_into(self, buf: memoryview) -> int:
        """Fill ``buf`` from the stream; the bytes written (fewer than ``len(buf)`` at the end)."""
        done = 0
        while done < len(buf):
            out = self.piece(min(len(buf) - done, _PIECE))
            if not out:
                break
            buf[done:done + len(out)] = out
            done += len(out)
        return done


def _read_stream(path: Path, stream: _XzStream) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`read_artifact` on the decompressed ``stream``: the header's length, the header, the tensor
    bytes it states, and the check that nothing follows them."""
    size = bytearray(8)
    if stream.read_into(memoryview(size)) < 8:
        raise CompressError(f"{path}: truncated: it ends before the 8-byte length of its safetensors header")
    header_len = int.from_bytes(size, "little")
    if header_len > MAX_HEADER_BYTES:
        raise CompressError(f"{path}: its safetensors header would take {header_len:,} bytes, over the "
                            f"{_fmt(MAX_HEADER_BYTES)} a cnnlab artifact's header may take")
    raw = bytearray(header_len)
    if stream.read_into(memoryview(raw)) < header_len:
        raise CompressError(f"{path}: truncated: it ends inside its {header_len}-byte safetensors header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, _DuplicateKey) as e:
        raise CompressError(f"{path}: its safetensors header is not JSON ({e})") from None
    entries, meta, total = _check_header(path, header)
    limit = max_artifact_bytes()
    if total > limit:
        raise CompressError(f"{path}: its header states {_fmt(total)} of tensors, over the {_fmt(limit)} limit "
                            f"(${MAX_ARTIFACT_ENV})")
    data = bytearray(total)
    got = stream.read_into(memoryview(data))
    if got < total:
        raise CompressError(f"{path}: truncated: its header states {total} bytes of tensors, it holds {got}")
    try:
        more = stream.piece(1)
    except lzma.LZMAError:
        raise CompressError(f"{path}: holds bytes after its xz stream that are not xz data") from None
    if more:
        raise CompressError(f"{path}: holds more bytes than its header states ({total} bytes of tensors)")
    if stream.truncated and stream.after_stream:
        raise CompressError(f"{path}: holds bytes after its xz stream that are not xz data")
    if stream.truncated:
        raise CompressError(f"{path}: truncated: its xz stream lacks its end (and the check of its data)")
    return _tensors(path, data, entries), meta


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with each key once (two tensors of one name would be read differently by different
    readers)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(f"key {dup!r} appears twice")
    return out


def _check_header(path: Path, header: Any) -> tuple[list[tuple[str, str, list[int], int, int]], dict[str, Any], int]:
    """The tensors a safetensors header describes, as (name, dtype, shape, begin, end) sorted by position,
    its ``meta``, and the total bytes of tensor data it states. Every dtype must be known, every shape a
    list of non-negative ints, every byte range exactly ``numel * itemsize`` long, and the ranges
    contiguous from 0 (so none overlaps and none leaves a gap); else :class:`CompressError`."""
    if not isinstance(header, dict):
        raise CompressError(f"{path}: its safetensors header is a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CompressError(f"{path}: its header's __metadata__ is not an object of strings")
    try:
        meta = json.loads(metadata.get(_META_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise CompressError(f"{path}: its {_META_KEY} metadata is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CompressError(f"{path}: its {_META_KEY} metadata is a JSON {type(meta).__name__}, not an object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CompressError(f"{path}: tensor {name!r} in its header is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise CompressError(f"{path}: tensor {name!r} has dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise CompressError(f"{path}: tensor {name!r} has shape {shape!r}; expected a list of non-negative ints")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise CompressError(f"{path}: tensor {name!r} has data_offsets {offsets!r}; expected [begin, end] "
                                "with 0 <= begin <= end")
        nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise CompressError(f"{path}: tensor {name!r} ({dtype} {shape}) takes {nbytes} bytes; its data_offsets "
                                f"{offsets} give {offsets[1] - offsets[0]}")
        entries.append((name, dtype, shape, offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    end = 0
    for name, _, _, begin, stop in entries:
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else f"leaves {begin - end} bytes unused before it"
            raise CompressError(f"{path}: tensor {name!r} at bytes {begin}..{stop} {what}")
        end = stop
    return entries, meta, end


def _tensors(path: Path, data: bytearray,
             entries: list[tuple[str, str, list[int], int, int]]) -> dict[str, torch.Tensor]:
    """The tensors ``entries`` place in ``data`` (little-endian, as safetensors stores them). Each is a view
    of ``data`` with a storage of its own (none overlaps another); one at an offset that is not a multiple
    of its item size is copied out, so every tensor is aligned."""
    out = {}
    for name, dtype_name, shape, begin, end in entries:
        dtype = _DTYPES[dtype_name]
        numel = math.prod(shape)
        if numel == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        if begin % dtype.itemsize == 0:
            t = torch.frombuffer(data, dtype=dtype, count=numel, offset=begin)
        else:
            t = torch.frombuffer(data, dtype=torch.uint8, count=end - begin, offset=begin).clone().view(dtype)
        if sys.byteorder == "big" and dtype.itemsize > 1:
            t = t.view(torch.uint8).view(-1, dtype.itemsize).flip(1).contiguous().view(dtype)
        if dtype == torch.bool and int(t.view(torch.uint8).max()) > 1:
            raise CompressError(f"{path}: BOOL tensor {name!r} holds bytes other than 0 and 1")
        out[name] = t.reshape(shape)
    return out


def artifact_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """The size :func:`write_artifact` would write, without writing."""
    return len(_encode(tensors, meta))


def xz_size(path: str | os.PathLike) -> int:
    """Bytes of ``path`` after the same xz compression (for a baseline measured the same way). Remembered per file
    (path, size and modification time): every method compressing one run asks it of the same weights, and xz
    takes seconds on them."""
    st = os.stat(path)
    return _xz_size(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _xz_size(path: str, size: int, mtime_ns: int) -> int:
    return len(lzma.compress(Path(path).read_bytes(), **_XZ))
