"""Every rank of the job runs the same tests in the same order (pytest's), so the ranks make
the same calls; each checks its own results against references computed here, never by the
library. Inputs are small integers: every result is exact in every datatype."""
import numpy as np
import pytest

import ibcomm

# every numpy dtype that maps, plus bfloat16 as bit patterns in uint16 arrays (dtype= override)
DTYPES = ["int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64",
          "bfloat16"]
OPS = ["SUM", "PROD", "MIN", "MAX", "AVG"]


@pytest.fixture(scope="session")
def comm():
    with ibcomm.Comm() as c:
        yield c


def storage(dt):
    """The numpy dtype that holds dt's elements."""
    return np.dtype(np.uint16) if dt == "bfloat16" else np.dtype(dt)


def override(dt):
    """The dtype= argument a call needs for dt."""
    return ibcomm.BFLOAT16 if dt == "bfloat16" else None


def is_float(dt):
    return dt.startswith("float") or dt == "bfloat16"


def value(dt, op, size, rank, i):
    """Rank's element i: signed and floating -2..2, unsigned 0..4 (PROD: products stay small);
    floats under AVG are multiples of size so that the mean is exact."""
    v = (rank * 7 + i * 3) % 5
    if not dt.startswith("uint"):
        v -= 2
    if op == "AVG" and is_float(dt):
        v *= size
    return v


def reference(dt, op, vals):
    """op over the python ints vals, as the library defines it (AVG truncates toward zero)."""
    if op == "SUM":
        return sum(vals)
    if op == "PROD":
        p = 1
        for v in vals:
            p *= v
        return p
    if op == "MIN":
        return min(vals)
    if op == "MAX":
        return max(vals)
    s = sum(vals)
    q = abs(s) // len(vals)
    return q if s >= 0 else -q


def encode(dt, ints):
    """An array of dt holding the python ints (wrapped like the library's integer arithmetic;
    bfloat16 as its bit patterns)."""
    if dt == "bfloat16":
        f = np.array(ints, dtype=np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16)
    if is_float(dt):
        return np.array(ints, dtype=dt)
    bits = np.dtype(dt).itemsize * 8
    wrapped = [v % (1 << bits) for v in ints]
    if not dt.startswith("uint"):
        wrapped = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in wrapped]
    return np.array(wrapped, dtype=dt)


def inputs(dt, op, size, rank, n, salt=0):
    return [value(dt, op, size, rank, i + salt) for i in range(n)]


def as_values(dt, arr):
    """Comparable values: bfloat16 bit patterns widened to float32."""
    if dt == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def assert_same(dt, got, want, what):
    """Equal element for element (for floats by value: the sign of a zero product is not the
    python int's), same dtype and shape."""
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, what
    if not np.array_equal(as_values(dt, got), as_values(dt, want)):
        raise AssertionError("%s: got %s, want %s" % (what, got, want))
