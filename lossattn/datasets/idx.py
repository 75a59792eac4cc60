"""Reader for the IDX format of MNIST (``*-idx3-ubyte`` images, ``*-idx1-ubyte`` labels), gzipped or not."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import DataFormatError
from .textio import read_bytes

__all__ = ["read_idx", "write_idx"]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (``.gz`` detected from its content).

    The header is 2 zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian uint32 sizes.

    Args:
        path: File path.

    Returns:
        The array, e.g. uint8 ``(60000, 28, 28)`` for MNIST training images. Read-only.

    Raises:
        DataFormatError: Bad magic number, unknown type code, or a truncated/corrupt file (the message gives
            the byte counts).
    """
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DataFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header (truncated?)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _DTYPES or ndim < 1:
        raise DataFormatError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; expected 0000 + type code 08 + dims, "
            f"e.g. 00000803 for images, 00000801 for labels)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        state = "truncated" if got < expected else "longer than its header says"
        raise DataFormatError(
            f"{path}: IDX data is {state}: header {dims} needs {expected} bytes after the header, found {got}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else arr


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Writes an array as IDX (used by tests and to export data); gzip when ``compress`` or the name ends
    in ``.gz``.

    Args:
        path: Destination.
        array: uint8/int8/int16/int32/float32/float64 array with at least one dimension.
        compress: Force gzip on/off (default: from the file name).

    Returns:
        ``path``.
    """
    import gzip

    path = Path(path)
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    tc = codes.get(arr.dtype.newbyteorder("="))
    if tc is None or arr.ndim < 1:
        raise ValueError(f"cannot write an array of dtype {arr.dtype} and shape {arr.shape} as IDX")
    payload = struct.pack(">HBB", 0, tc, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(_DTYPES[tc], copy=False).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path
