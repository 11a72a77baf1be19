"""Reading ``model.cnnz`` from an untrusted file: the header is checked and the stated size capped before
any tensor byte is decompressed, and every bad file raises CompressError with one line naming it."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
import textwrap
import zlib

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cnnlab.compress import CompressError
from cnnlab.compress import storage
from cnnlab.compress.storage import (MAX_ARTIFACT_BYTES, MAX_ARTIFACT_ENV, MAX_HEADER_BYTES, pack_bits, read_artifact,
                                     unpack_bits, write_artifact)

GiB = 1 << 30


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    monkeypatch.delenv(MAX_ARTIFACT_ENV, raising=False)


def blob(header: dict | bytes, data: bytes = b"") -> bytes:
    """A safetensors file: the header's length (8 bytes, little-endian), the header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def xz(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=0)


def assert_refused(path, match: str) -> str:
    """The one-line message ``read_artifact(path)`` refuses the file with; it names the file."""
    with pytest.raises(CompressError, match=match) as info:
        read_artifact(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def one_f32(values=(1.0, 2.0, 3.0)) -> tuple[dict, bytes]:
    data = torch.tensor(values, dtype=torch.float32).numpy().tobytes()
    return {"w": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}, data


# -- what it reads ----------------------------------------------------------------------------------------
def test_round_trip_of_every_dtype_cnnlab_stores_equals_safetensors_own_reader(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(), "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(-3, 4), "i32": torch.arange(6, dtype=torch.int32).view(2, 3),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8), "u8": pack_bits(torch.tensor([1, 0, 1, 1, 0]), 1),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
    }
    meta = {"bits": 4, "layers": {"a.b": [1, 2]}, "text": "é"}
    size = write_artifact(tmp_path / "m.cnnz", tensors, meta)
    assert size == (tmp_path / "m.cnnz").stat().st_size
    got, got_meta = read_artifact(tmp_path / "m.cnnz")
    assert got_meta == meta
    reference = st_load(lzma.decompress((tmp_path / "m.cnnz").read_bytes()))
    assert got.keys() == tensors.keys() == reference.keys()
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and got[k].shape == t.shape and torch.equal(got[k], t), k
        assert torch.equal(got[k], reference[k]), k
    got["i64"].add_(1)  # each tensor owns its bytes: writing one leaves the others as read
    assert torch.equal(got["i32"], tensors["i32"]) and torch.equal(got["f64"], tensors["f64"])


def test_an_unaligned_tensor_and_concatenated_xz_streams_are_read(tmp_path):
    u8, f32 = bytes([7]), torch.tensor([1.5, -2.0]).numpy().tobytes()
    header = {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}}
    raw = blob(header, u8 + f32)
    (tmp_path / "m.cnnz").write_bytes(xz(raw[:5]) + xz(raw[5:20]) + xz(raw[20:]))  # as `cat a.xz b.xz` makes
    tensors, meta = read_artifact(tmp_path / "m.cnnz")
    assert meta == {} and tensors["a"].tolist() == [7] and tensors["b"].tolist() == [1.5, -2.0]
    assert tensors["b"].data_ptr() % 4 == 0


# -- broken files -----------------------------------------------------------------------------------------
def test_missing_empty_random_and_non_xz_files(tmp_path):
    assert_refused(tmp_path / "none.cnnz", "no such artifact")
    (tmp_path / "empty.cnnz").write_bytes(b"")
    assert_refused(tmp_path / "empty.cnnz", "empty file")
    (tmp_path / "random.cnnz").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                                          dtype=torch.uint8).numpy().tobytes())
    assert_refused(tmp_path / "random.cnnz", "not an xz-compressed cnnlab artifact")
    (tmp_path / "raw.cnnz").write_bytes(blob(*one_f32()))  # safetensors, not compressed
    assert_refused(tmp_path / "raw.cnnz", "not an xz-compressed cnnlab artifact")
    (tmp_path / "dir.cnnz").mkdir()
    assert_refused(tmp_path / "dir.cnnz", "cannot be read")


def test_xz_of_random_bytes_is_refused_by_its_header(tmp_path):
    g = torch.Generator().manual_seed(2)
    for i in range(8):
        (tmp_path / f"{i}.cnnz").write_bytes(xz(torch.randint(0, 256, (3000,), generator=g,
                                                                dtype=torch.uint8).numpy().tobytes()))
        assert_refused(tmp_path / f"{i}.cnnz", "header")


@pytest.mark.parametrize("cut", [1, 6, 12, 0.25, 0.5, 0.9, -12, -1])
def test_a_truncated_artifact_is_refused(tmp_path, cut):
    write_artifact(tmp_path / "m.cnnz", {"w": torch.randn(4000, generator=torch.Generator().manual_seed(0))},
                   {"bits": 4})
    data = (tmp_path / "m.cnnz").read_bytes()
    keep = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    (tmp_path / "m.cnnz").write_bytes(data[:keep])
    assert_refused(tmp_path / "m.cnnz", "truncated|not an xz|corrupt xz")


def test_data_shorter_or_longer_than_the_header_states_and_trailing_junk(tmp_path):
    header, data = one_f32()
    (tmp_path / "short.cnnz").write_bytes(xz(blob(header, data[:-4])))
    assert_refused(tmp_path / "short.cnnz", "truncated: its header states 12 bytes of tensors, it holds 8")
    (tmp_path / "long.cnnz").write_bytes(xz(blob(header, data + b"\0")))
    assert_refused(tmp_path / "long.cnnz", "holds more bytes than its header states")
    (tmp_path / "long2.cnnz").write_bytes(xz(blob(header, data)) + xz(b"\0"))
    assert_refused(tmp_path / "long2.cnnz", "holds more bytes than its header states")
    (tmp_path / "junk.cnnz").write_bytes(xz(blob(header, data)) + b"junk")
    assert_refused(tmp_path / "junk.cnnz", "bytes after its xz stream that are not xz data")
    good = xz(blob(header, data))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    (tmp_path / "flipped.cnnz").write_bytes(bytes(flipped))
    assert_refused(tmp_path / "flipped.cnnz", "corrupt xz data|not an xz|truncated|header|holds more")


F32_3 = {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}


@pytest.mark.parametrize("header, match", [
    ({"w": dict(F32_3, dtype="F128")}, "dtype 'F128'; valid: F64, F32"),
    ({"w": {"shape": [3], "data_offsets": [0, 12]}}, "dtype None"),
    ({"w": dict(F32_3, dtype=["F32"])}, r"dtype \['F32'\]"),
    ({"w": dict(F32_3, shape=[-3])}, "shape .*non-negative ints"),
    ({"w": dict(F32_3, shape=[True, 3])}, "shape .*non-negative ints"),
    ({"w": dict(F32_3, shape=[3.0])}, "shape .*non-negative ints"),
    ({"w": dict(F32_3, shape="3")}, "shape .*non-negative ints"),
    ({"w": dict(F32_3, data_offsets=[12, 0])}, "data_offsets"),
    ({"w": dict(F32_3, data_offsets=[0, 12, 24])}, "data_offsets"),
    ({"w": dict(F32_3, data_offsets=[-4, 8])}, "data_offsets"),
    ({"w": dict(F32_3, data_offsets=[0, 8])}, "takes 12 bytes; its data_offsets"),
    ({"w": dict(F32_3, shape=[2**40, 2**40])}, "takes .* bytes; its data_offsets"),
    ({"w": dict(F32_3, data_offsets=[4, 16])}, "leaves 4 bytes unused"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlaps"),
    ({"w": [0, 12]}, "not an object"),
    ({"w": F32_3, "__metadata__": {"cnnlab_meta": 3}}, "__metadata__ is not an object of strings"),
    ({"w": F32_3, "__metadata__": {"cnnlab_meta": "{bits"}}, "cnnlab_meta metadata is not JSON"),
    ({"w": F32_3, "__metadata__": {"cnnlab_meta": "[4]"}}, "cnnlab_meta metadata is a JSON list"),
    (b'[{"w": 1}]', "header is a JSON list"),
    (b'{"w": ', "header is not JSON"),
    (b'\xff\xfe{}', "header is not JSON"),
    (b'{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, "w": {"dtype": "U8", "shape": [12], '
     b'"data_offsets": [0, 12]}}', "key 'w' appears twice"),
])
def test_a_header_that_does_not_describe_its_data_is_refused(tmp_path, header, match):
    (tmp_path / "m.cnnz").write_bytes(xz(blob(header, bytes(12))))
    assert_refused(tmp_path / "m.cnnz", match)


def test_a_bool_tensor_must_hold_zeros_and_ones(tmp_path):
    header = {"b": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}
    (tmp_path / "m.cnnz").write_bytes(xz(blob(header, bytes([1, 2, 0]))))
    assert_refused(tmp_path / "m.cnnz", "BOOL tensor 'b' holds bytes other than 0 and 1")


def test_a_header_over_its_limit_is_refused_before_it_is_read(tmp_path):
    raw = (MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{"  # the header itself is not there
    (tmp_path / "m.cnnz").write_bytes(xz(raw))
    assert_refused(tmp_path / "m.cnnz", r"header would take 8,388,609 bytes, over the 8.00 MiB a cnnlab artifact's header")
    (tmp_path / "huge.cnnz").write_bytes(xz((2**64 - 1).to_bytes(8, "little")))
    assert_refused(tmp_path / "huge.cnnz", "header would take 18,446,744,073,709,551,615 bytes")


def test_a_stream_asking_for_a_4_gib_dictionary_is_refused(tmp_path):
    data = bytearray(xz(blob(*one_f32())))
    block = data[12:12 + (data[12] + 1) * 4]  # the block header after the 12-byte stream header
    props = block.index(b"\x21\x01") + 2  # LZMA2's one property byte: the dictionary size
    block[props] = 40  # 4 GiB - 1
    block[-4:] = zlib.crc32(bytes(block[:-4])).to_bytes(4, "little")
    data[12:12 + len(block)] = block
    (tmp_path / "m.cnnz").write_bytes(bytes(data))
    assert_refused(tmp_path / "m.cnnz", "asks for more than 256 MiB of decoder memory")


# -- the size limit ---------------------------------------------------------------------------------------
def test_the_stated_size_is_capped_and_the_cap_is_set_by_the_environment(tmp_path, monkeypatch):
    header, data = one_f32()
    header["big"] = {"dtype": "U8", "shape": [2**32 - 12], "data_offsets": [12, 2**32]}
    (tmp_path / "claims.cnnz").write_bytes(xz(blob(header, data)))
    message = assert_refused(tmp_path / "claims.cnnz", "header states 4.00 GiB of tensors")
    assert message == (f"{tmp_path / 'claims.cnnz'}: its header states 4.00 GiB of tensors, over the 1.00 GiB "
                       f"limit (${MAX_ARTIFACT_ENV})")
    assert MAX_ARTIFACT_BYTES == GiB == storage.max_artifact_bytes()
    write_artifact(tmp_path / "m.cnnz", {"w": torch.zeros(100)}, {})  # 400 bytes of tensors
    monkeypatch.setenv(MAX_ARTIFACT_ENV, "399")
    assert_refused(tmp_path / "m.cnnz", f"400 bytes of tensors, over the 399 bytes limit \\(\\${MAX_ARTIFACT_ENV}\\)")
    monkeypatch.setenv(MAX_ARTIFACT_ENV, "400")
    assert read_artifact(tmp_path / "m.cnnz")[0]["w"].shape == (100,)
    monkeypatch.setenv(MAX_ARTIFACT_ENV, "8G")
    assert storage.max_artifact_bytes() == 8 * GiB
    monkeypatch.setenv(MAX_ARTIFACT_ENV, "lots")
    with pytest.raises(CompressError, match=rf"\${MAX_ARTIFACT_ENV}='lots': give a positive number of bytes"):
        read_artifact(tmp_path / "m.cnnz")


# -- xz bombs, read under a memory limit --------------------------------------------------------------------
# The child imports torch and cnnlab, then limits its address space to what it has mapped plus HEADROOM:
# the old reader (lzma.decompress of the whole file) hit MemoryError at once on these files.
HEADROOM = 768 << 20
CHILD = textwrap.dedent("""
    import resource, sys
    import torch
    from cnnlab.compress import CompressError
    from cnnlab.compress.storage import read_artifact

    mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
    limit = mapped + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        read_artifact(sys.argv[1])
    except CompressError as e:
        print("refused:", e)
        raise SystemExit(0)
    print("read it")
    raise SystemExit(1)
""")


@pytest.fixture(scope="module")
def zeros_streams():
    """4 GiB of zeros as 64 concatenated xz streams of 64 MiB each (about 0.6 MB; 0.2 s to make)."""
    one = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_XZ, preset=0)
    return one * 64


def read_limited(path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != MAX_ARTIFACT_ENV}
    return subprocess.run([sys.executable, "-c", CHILD, str(path), str(HEADROOM)], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux")
def test_a_bomb_whose_header_claims_4_gib_is_refused_before_decompressing(tmp_path, zeros_streams):
    header = {"w": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 4 * GiB]}}
    path = tmp_path / "model.cnnz"
    path.write_bytes(xz(blob(header)) + zeros_streams)
    assert path.stat().st_size < 1 << 20
    done = read_limited(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == (f"refused: {path}: its header states 4.00 GiB of tensors, over the 1.00 GiB limit "
                                   f"(${MAX_ARTIFACT_ENV})")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux")
def test_a_bomb_with_a_small_header_and_4_gib_of_data_stops_after_the_stated_bytes(tmp_path, zeros_streams):
    header, data = one_f32()
    first = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0)  # in one stream: header, data, 64 MiB more
    head = first.compress(blob(header, data))
    for _ in range(4):
        head += first.compress(bytes(16 << 20))
    path = tmp_path / "model.cnnz"
    path.write_bytes(head + first.flush() + zeros_streams)
    done = read_limited(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"refused: {path}: holds more bytes than its header states (12 bytes of tensors)"


# -- bit packing ------------------------------------------------------------------------------------------
def test_unpack_bits_takes_exactly_the_bytes_pack_bits_wrote():
    codes = torch.tensor([3, 0, 2, 1, 3, 3, 0])
    packed = pack_bits(codes, 2)
    assert packed.numel() == 2 and torch.equal(unpack_bits(packed, 2, 7), codes)
    with pytest.raises(CompressError, match="not the 3 bytes that 7 codes of 3 bits pack into"):
        unpack_bits(packed, 3, 7)  # packed with 2 bits
    with pytest.raises(CompressError, match="not the 1 bytes that 4 codes of 2 bits pack into"):
        unpack_bits(packed, 2, 4)  # packed for more codes
    with pytest.raises(CompressError, match="int64 values"):
        unpack_bits(packed.long(), 2, 7)


def test_what_write_artifact_writes_is_safetensors_in_xz(tmp_path):
    write_artifact(tmp_path / "m.cnnz", {"w": torch.ones(2)}, {"bits": 2})
    raw = lzma.decompress((tmp_path / "m.cnnz").read_bytes())
    assert raw == st_save({"w": torch.ones(2)}, metadata={"cnnlab_meta": json.dumps({"bits": 2}, sort_keys=True)})
