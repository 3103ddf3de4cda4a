"""Checks a buffer before anything is sent: C-contiguous, writable where written, a datatype
ibcomm has. Returns its address, element count and ibcomm datatype."""
import sys

import numpy as np

from ._lib import DType, DTYPE_SIZE

# memoryview format character -> kind: signed, unsigned or floating
_KIND = {"b": "i", "h": "i", "i": "i", "l": "i", "q": "i", "n": "i",
         "B": "u", "H": "u", "I": "u", "L": "u", "Q": "u", "N": "u",
         "e": "f", "f": "f", "d": "f"}
_BY_KIND = {("i", 1): DType.INT8, ("u", 1): DType.UINT8, ("i", 4): DType.INT32,
            ("u", 4): DType.UINT32, ("i", 8): DType.INT64, ("u", 8): DType.UINT64,
            ("f", 2): DType.FLOAT16, ("f", 4): DType.FLOAT32, ("f", 8): DType.FLOAT64}
_NAMES = {"int8": DType.INT8, "uint8": DType.UINT8, "int32": DType.INT32, "uint32": DType.UINT32,
          "int64": DType.INT64, "uint64": DType.UINT64, "float16": DType.FLOAT16,
          "half": DType.FLOAT16, "bfloat16": DType.BFLOAT16, "float32": DType.FLOAT32,
          "float": DType.FLOAT32, "float64": DType.FLOAT64, "double": DType.FLOAT64}
_FOREIGN_ORDER = ">!" if sys.byteorder == "little" else "<"


def dtype_name(dt):
    return dt.name.lower()


def as_dtype(dtype):
    """An ibcomm DType from a DType, its name ("bfloat16") or a numpy dtype."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _NAMES:
        return _NAMES[dtype.lower()]
    try:
        return _NAMES[np.dtype(dtype).name]
    except (TypeError, KeyError):
        raise TypeError("dtype=%r: not an ibcomm datatype (%s)" %
                        (dtype, ", ".join(d.name.lower() for d in DType))) from None


class Buffer:
    """A checked buffer. Keeps the object's buffer exported (so it can be neither resized nor
    freed) for as long as it lives."""
    __slots__ = ("view", "raw", "addr", "count", "dtype")

    def __init__(self, view, raw, count, dtype):
        self.view = view
        self.raw = raw
        self.addr = raw.ctypes.data if count else None
        self.count = count
        self.dtype = dtype


def _native(obj, mv):
    """The ibcomm datatype of the buffer's own format, or a TypeError naming it."""
    if isinstance(obj, np.ndarray) and obj.dtype.name == "bfloat16":  # ml_dtypes
        return DType.BFLOAT16, None
    fmt = mv.format
    if fmt and fmt[0] in "@=<>!":
        if fmt[0] in _FOREIGN_ORDER:
            return None, "its byte order is not this machine's (format %r)" % fmt
        fmt = fmt[1:]
    kind = _KIND.get(fmt)
    dt = _BY_KIND.get((kind, mv.itemsize)) if kind else None
    if dt is not None:
        return dt, None
    what = np.dtype(obj.dtype).name if isinstance(obj, np.ndarray) else "format %r" % mv.format
    hint = " (bfloat16 data in a uint16 array: pass dtype=ibcomm.BFLOAT16)" if mv.itemsize == 2 else ""
    return None, "%s has no ibcomm datatype%s" % (what, hint)


def buffer(obj, what, writable, dtype=None):
    """Checks obj for the argument named `what`; dtype overrides the datatype of its format
    (same element size)."""
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError("%s: a %s is not a buffer (pass a numpy array or another object with the "
                        "buffer protocol)" % (what, type(obj).__name__)) from None
    if not mv.c_contiguous:
        raise ValueError("%s: the array is not C-contiguous (a strided view or a transpose): pass "
                         "numpy.ascontiguousarray(...) (and copy results back)" % what)
    if writable and mv.readonly:
        raise ValueError("%s: the buffer is read-only but this call writes into it" % what)
    native, why = _native(obj, mv)
    if dtype is None:
        if native is None:
            raise TypeError("%s: %s" % (what, why))
        dt = native
    else:
        dt = as_dtype(dtype)
        if DTYPE_SIZE[dt] != mv.itemsize:
            raise TypeError("%s: dtype=%s has %d-byte elements, the buffer's are %d bytes" %
                            (what, dtype_name(dt), DTYPE_SIZE[dt], mv.itemsize))
    count = mv.nbytes // mv.itemsize if mv.itemsize else 0
    raw = np.frombuffer(mv, dtype=np.uint8)
    return Buffer(mv, raw, count, dt)


def same_dtype(fn, a, b, aname="a", bname="out"):
    if a.dtype != b.dtype:
        raise TypeError("%s: %s is %s but %s is %s: both must have the same datatype" %
                        (fn, bname, dtype_name(b.dtype), aname, dtype_name(a.dtype)))
