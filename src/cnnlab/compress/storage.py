"""Stored sizes that are real bytes: the artifact (safetensors, then xz) and the helpers methods pack with.

The artifact of a compressed model is one file, ``model.cnnz``: the method's tensors written as
safetensors (with ``meta`` as JSON in its header), then compressed with xz (LZMA2, Python's ``lzma``):
packed bits, codebooks and sparse indices are what is on disk, and a standard codec takes what
redundancy is left. Reading it back needs no pickle.
"""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cnnlab._io import atomic_write_bytes
from cnnlab.compress.base import CompressError

__all__ = ["ARTIFACT", "pack_bits", "unpack_bits", "write_artifact", "read_artifact", "artifact_bytes",
           "xz_size"]

ARTIFACT = "model.cnnz"
_META_KEY = "cnnlab_meta"
_XZ = {"format": lzma.FORMAT_XZ, "preset": 6}


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
    """The inverse of :func:`pack_bits`: ``numel`` codes as int64, flat."""
    if not 1 <= bits <= 8:
        raise CompressError(f"bits must be 1..8 to unpack; got {bits}")
    if packed.numel() * 8 < numel * bits:
        raise CompressError(f"{packed.numel()} bytes hold fewer than {numel} codes of {bits} bits")
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
    """The tensors and meta of an artifact written by :func:`write_artifact`."""
    path = Path(path)
    try:
        raw = lzma.decompress(path.read_bytes(), format=lzma.FORMAT_XZ)
    except FileNotFoundError:
        raise CompressError(f"{path}: no such artifact") from None
    except lzma.LZMAError as e:
        raise CompressError(f"{path}: not an xz-compressed cnnlab artifact ({e})") from None
    tensors = st_load(raw)  # the header's metadata, which load() does not return, is read below
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    meta = json.loads(header.get("__metadata__", {}).get(_META_KEY, "{}"))
    return tensors, meta


def artifact_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """The size :func:`write_artifact` would write, without writing."""
    return len(_encode(tensors, meta))


def xz_size(path: str | os.PathLike) -> int:
    """Bytes of ``path`` after the same xz compression (for a baseline measured the same way)."""
    return len(lzma.compress(Path(path).read_bytes(), **_XZ))
