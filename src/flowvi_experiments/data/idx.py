"""Parser of LeCun's IDX format (MNIST): a big-endian header ``0x00 0x00 TYPE NDIM``, ``NDIM``
big-endian 32-bit dimension sizes, then the values in row-major order.
"""

from __future__ import annotations

import numpy as np

#: IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file into a (native-endian) array with the dimensions of its header.

    Checks the magic number (two zero bytes, a known type code, at least one dimension) and that
    the payload is exactly the size the header announces; otherwise raises
    :class:`~flowvi_experiments.data.DatasetError` naming ``source``.
    """
    from .errors import DatasetError

    if len(data) < 4:
        raise DatasetError(
            f"{source}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"{source}: not an IDX file: magic number {data[:4].hex()} (expected 0000TTNN with type TT in "
            f"{', '.join(f'{c:02x}' for c in IDX_DTYPES)} and NN >= 1 dimensions; "
            f"a gzip file needs the .gz suffix)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header: {len(data)} bytes, the header needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes in"
        raise DatasetError(
            f"{source}: {kind} IDX file: {len(data)} bytes, the header (dims {dims}, {dtype.name}) "
            f"announces {expected}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="), copy=False)


def to_idx(values: np.ndarray) -> bytes:
    """Encode ``values`` (a dtype of :data:`IDX_DTYPES`) as IDX bytes: the inverse of :func:`parse_idx`."""
    for code, dtype in IDX_DTYPES.items():
        if values.dtype.kind == dtype.kind and values.dtype.itemsize == dtype.itemsize:
            dims = np.asarray(values.shape, dtype=">u4").tobytes()
            return (
                bytes([0, 0, code, values.ndim]) + dims + np.ascontiguousarray(values, dtype=dtype).tobytes()
            )
    raise ValueError(f"no IDX type for dtype {values.dtype}")
