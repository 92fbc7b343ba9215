"""dlib's binary serialization (dlib/serialize.h): integers, floats, strings, bools and tensors.

Integers are one control byte (low nibble: byte count, bit 7: negative) then little-endian
magnitude bytes; floating point values are an integer mantissa and an integer exponent;
strings are a length then raw bytes; bools are the characters '1'/'0'; tensors
(dlib/dnn/tensor.h) are a version, four dimensions, then raw little-endian float32.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class DlibFormatError(ValueError):
    """The file is not a dlib DNN file this reader understands (the message says where)."""


class DlibStream:
    """A cursor over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} (at byte {self.pos})")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self._data):
            raise self.fail("unexpected end of file")
        out = self._data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def at_end(self) -> bool:
        return self.pos == len(self._data)

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise self.fail(f"integer of {size} bytes")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        n = self.integer()
        if n < 0 or n > 1 << 20:
            raise self.fail(f"string of length {n}")
        return self._take(n).decode("latin-1")

    def boolean(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise self.fail(f"bool byte {c!r}")
        return c == b"1"

    def version(self, expected: set[int], what: str) -> int:
        v = self.integer()
        if v not in expected:
            raise self.fail(f"{what} version {v} is not supported (known: {sorted(expected)})")
        return v

    def tensor(self) -> NDArray[np.float32]:
        """A dlib tensor as (num_samples, k, nr, nc) float32."""
        self.version({2}, "tensor")
        dims = [self.integer() for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.fail(f"tensor with dimensions {dims}")
        count = dims[0] * dims[1] * dims[2] * dims[3]
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An alias_tensor's shape (it views part of a layer's parameter tensor)."""
        self.version({1}, "alias_tensor")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc
