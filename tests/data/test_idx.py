"""Tests for cnnlab.data.idx: the IDX reader/writer used for (Fashion-)MNIST."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest

from cnnlab.data.idx import IDX_DTYPES, IDXError, read_idx, write_idx

GZIP_MAGIC = b"\x1f\x8b"


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand (independently of write_idx)."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def sample(dtype, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (17,), (2, 3, 4, 5)])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, shape, name):
    array = sample(dtype, shape)
    path = write_idx(tmp_path / name, array)
    assert path == tmp_path / name
    out = read_idx(path)
    assert out.shape == shape
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_round_trip_of_big_endian_input(tmp_path):
    array = np.array([[1, -2, 300], [70000, -70000, 0]], dtype=">i4")
    out = read_idx(write_idx(tmp_path / "be.idx", array))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_round_trip_keeps_empty_leading_dimension(tmp_path):
    array = np.zeros((0, 28, 28), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / "empty.gz", array))
    assert out.shape == (0, 28, 28)
    assert out.dtype == np.uint8


def test_read_result_is_a_writable_copy(tmp_path):
    out = read_idx(write_idx(tmp_path / "a.idx", np.arange(6, dtype=np.uint8)))
    assert out.flags.writeable
    out[0] = 99  # must not raise (np.frombuffer alone would give a read-only array)
    assert out[0] == 99


def test_write_idx_produces_the_standard_byte_layout(tmp_path):
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    write_idx(tmp_path / "u8.idx", array)
    assert (tmp_path / "u8.idx").read_bytes() == idx_bytes(0x08, (2, 3), bytes([1, 2, 3, 4, 5, 6]))

    array16 = np.array([1, -2, 258], dtype=np.int16)
    write_idx(tmp_path / "i16.idx", array16)
    assert (tmp_path / "i16.idx").read_bytes() == idx_bytes(0x0B, (3,), struct.pack(">3h", 1, -2, 258))


@pytest.mark.parametrize(
    "code, fmt, values",
    [(0x08, "B", [0, 7, 255]), (0x09, "b", [-128, 0, 127]), (0x0B, "h", [-300, 2, 30000]),
     (0x0C, "i", [-(2**31), 5, 2**31 - 1]), (0x0D, "f", [1.5, -2.25, 0.0]), (0x0E, "d", [1e300, -0.5, 3.0])],
)
def test_read_hand_written_files_of_every_type(tmp_path, code, fmt, values):
    path = tmp_path / "hand.idx"
    path.write_bytes(idx_bytes(code, (3,), struct.pack(f">3{fmt}", *values)))
    out = read_idx(path, expect_ndim=1)
    assert out.dtype == IDX_DTYPES[code].newbyteorder("=")
    np.testing.assert_array_equal(out, np.array(values, dtype=out.dtype))


def test_read_hand_written_3d_file_is_c_order(tmp_path):
    path = tmp_path / "img.idx"
    path.write_bytes(idx_bytes(0x08, (2, 2, 3), bytes(range(12))))
    out = read_idx(path, expect_ndim=3)
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.uint8).reshape(2, 2, 3))


# ---------------------------------------------------------------- gzip handling


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = sample("uint8", (4, 5, 6))

    gz_without_suffix = write_idx(tmp_path / "images.idx", array, compress=True)
    assert gz_without_suffix.read_bytes()[:2] == GZIP_MAGIC
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)

    raw_with_gz_suffix = write_idx(tmp_path / "images.gz", array, compress=False)
    assert raw_with_gz_suffix.read_bytes()[:4] == b"\x00\x00\x08\x03"
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), array)


def test_default_compression_follows_the_suffix(tmp_path):
    array = sample("int16", (10,))
    assert write_idx(tmp_path / "x.gz", array).read_bytes()[:2] == GZIP_MAGIC
    assert write_idx(tmp_path / "x.idx", array).read_bytes()[:4] == b"\x00\x00\x0b\x01"
    assert write_idx(tmp_path / "x-gz", array).read_bytes()[:2] != GZIP_MAGIC


def test_reads_externally_gzipped_file(tmp_path):
    path = tmp_path / "ext.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (2, 2), bytes([9, 8, 7, 6]))))
    np.testing.assert_array_equal(read_idx(path), [[9, 8], [7, 6]])


# ---------------------------------------------------------------- errors


def assert_idx_error(path, *fragments, **kwargs):
    with pytest.raises(IDXError) as info:
        read_idx(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_idx_error_is_a_value_error():
    assert issubclass(IDXError, ValueError)


def test_bad_magic(tmp_path):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab")
    assert_idx_error(path, "magic", "01000801")


def test_bad_magic_inside_gzip(tmp_path):
    path = tmp_path / "bad-magic.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04" + b"\x00" * 20))
    assert_idx_error(path, "magic")


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_type_code(tmp_path, code):
    path = tmp_path / "bad-code"
    path.write_bytes(idx_bytes(code, (2,), b"ab"))
    assert_idx_error(path, "type code", f"0x{code:02x}")


def test_zero_dimensions(tmp_path):
    path = tmp_path / "zero-dim"
    path.write_bytes(b"\x00\x00\x08\x00" + b"abc")
    assert_idx_error(path, "0 dimensions")


def test_wrong_expect_ndim(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.arange(10, dtype=np.uint8))
    assert_idx_error(path, "expected 3 dimensions", "declares 1", expect_ndim=3)
    # the right number is accepted
    assert read_idx(path, expect_ndim=1).shape == (10,)


@pytest.mark.parametrize("keep", [4, 5, 8, 15])
def test_truncated_header(tmp_path, keep):
    full = idx_bytes(0x08, (2, 3, 4), bytes(24))  # header is 4 + 3*4 = 16 bytes
    path = tmp_path / "short-header"
    path.write_bytes(full[:keep])
    assert_idx_error(path, "truncated header", "16 bytes")


def test_truncated_payload(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(0x08, (2, 3, 4), bytes(23)))
    assert_idx_error(path, "truncated", "24", "23")


def test_truncated_payload_of_wide_type(tmp_path):
    path = tmp_path / "short-f8.idx"
    path.write_bytes(idx_bytes(0x0E, (3,), bytes(8 * 3 - 1)))
    assert_idx_error(path, "truncated", "24")


@pytest.mark.parametrize("shape", [(2**16,) * 4, (2**31,) * 3])
def test_header_whose_size_overflows_int64(tmp_path, shape):
    path = tmp_path / "huge.idx"
    path.write_bytes(idx_bytes(0x08, shape, b""))  # declares 2**64 or 2**93 items, holds none
    assert_idx_error(path, "truncated")


def test_header_with_huge_sizes_is_reported_as_truncated(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(idx_bytes(0x08, (2**20, 2**20), b"\x00" * 10))
    assert_idx_error(path, "truncated")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(0x08, (2, 3), bytes(6)) + b"\x00")
    assert_idx_error(path, "trailing bytes", "6", "7")


def test_trailing_bytes_inside_gzip(tmp_path):
    path = tmp_path / "long.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (2, 3), bytes(8))))
    assert_idx_error(path, "trailing bytes")


@pytest.mark.parametrize("content", [b"", b"\x00", b"\x00\x00\x08"])
def test_file_shorter_than_four_bytes(tmp_path, content):
    path = tmp_path / "tiny"
    path.write_bytes(content)
    assert_idx_error(path, "too short", f"{len(content)} bytes")


def test_truncated_gzip_stream(tmp_path):
    good = write_idx(tmp_path / "good.gz", sample("uint8", (8, 28, 28))).read_bytes()
    for cut in (2, 10, len(good) // 2, len(good) - 1):
        path = tmp_path / f"cut{cut}.gz"
        path.write_bytes(good[:cut])
        assert_idx_error(path, "gzip")


def test_corrupt_gzip_stream(tmp_path):
    good = bytearray(write_idx(tmp_path / "good.gz", sample("uint8", (8, 28, 28))).read_bytes())
    middle = len(good) // 2
    good[middle : middle + 16] = bytes(b ^ 0xFF for b in good[middle : middle + 16])
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(good))
    assert_idx_error(path, "gzip")


def test_corrupt_gzip_checksum(tmp_path):
    good = bytearray(write_idx(tmp_path / "good.gz", sample("uint8", (3, 4))).read_bytes())
    good[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(good))
    assert_idx_error(path, "gzip")


def test_gzip_with_trailing_garbage(tmp_path):
    good = write_idx(tmp_path / "good.gz", sample("uint8", (3, 4))).read_bytes()
    path = tmp_path / "garbage.gz"
    path.write_bytes(good + b"garbage!")
    assert_idx_error(path, "gzip")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("dtype", ["bool", "uint16", "uint32", "int64", "float16", "complex64"])
def test_write_rejects_unsupported_dtype(tmp_path, dtype):
    path = tmp_path / "bad.idx"
    with pytest.raises(IDXError) as info:
        write_idx(path, np.zeros(3, dtype=dtype))
    assert str(path) in str(info.value)
    assert "dtype" in str(info.value)
    assert not path.exists()


def test_write_rejects_zero_dimensional_array(tmp_path):
    path = tmp_path / "scalar.idx"
    with pytest.raises(IDXError, match="dimensions"):
        write_idx(path, np.uint8(3))
    assert not path.exists()


def test_write_accepts_non_contiguous_arrays(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[::2, ::-3]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "view.idx", view)), view)


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "data.gz"  # the parent folder is created
    write_idx(path, np.zeros((2, 2), np.uint8))
    write_idx(path, np.full((3,), 7, np.uint8))
    np.testing.assert_array_equal(read_idx(path), [7, 7, 7])
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.gz"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_idx(tmp_path / "keep.idx", np.arange(4, dtype=np.uint8))
    before = path.read_bytes()
    with pytest.raises(IDXError):
        write_idx(path, np.arange(4, dtype=np.uint64))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.idx"]


def test_written_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_idx(tmp_path / "perm.idx", np.arange(3, dtype=np.uint8))
    # cnnlab._io reads the umask once at import; the test process has not changed it since.
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
