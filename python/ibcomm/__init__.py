"""ibcomm: collective communication over InfiniBand/RoCE (RDMA) or TCP, for numpy arrays.

    import numpy as np, ibcomm
    with ibcomm.Comm() as comm:          # rank, size, rendezvous from the environment
        a = np.arange(4, dtype=np.float32) + comm.rank
        comm.allreduce(a)                # in place, op=ibcomm.SUM

Run it with ibcomm_run (or srun, mpirun): ibcomm_run -n 4 -- python3 -m ibcomm.run prog.py
(ibcomm.run aborts every communicator on an unhandled exception so the other ranks fail at
once instead of waiting for the deadline). The C library is found through IBCOMM_LIBRARY,
else where make install put it, else the loader's search path.
"""
import sys

from ._lib import DType, Op, Error, ERROR_CLASSES, STATUS_TABLE
from ._lib import path as library_path
from .comm import Comm, Request, abort_all
from ._buffers import as_dtype

INT8, UINT8, INT32, UINT32, INT64, UINT64 = (DType.INT8, DType.UINT8, DType.INT32, DType.UINT32,
                                             DType.INT64, DType.UINT64)
FLOAT16, BFLOAT16, FLOAT32, FLOAT64 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64
SUM, PROD, MIN, MAX, AVG = Op.SUM, Op.PROD, Op.MIN, Op.MAX, Op.AVG

# One exception class per status: ibcomm.PeerError, ibcomm.TimedOutError, ...
for _cls in ERROR_CLASSES.values():
    globals()[_cls.__name__] = _cls
del _cls


def abort_on_exception():
    """Installs a sys.excepthook that prints the traceback, aborts every communicator and
    ends the process at once (status 1), without waiting for other threads: the other ranks
    see it gone and fail fast. python3 -m ibcomm.run does the same around a whole script."""
    from .run import _fail

    def hook(exc_type, exc, tb):
        _fail(exc_type, exc, tb)
    sys.excepthook = hook


__all__ = ["Comm", "Request", "Error", "DType", "Op", "abort_all", "abort_on_exception", "as_dtype",
           "library_path", "INT8", "UINT8", "INT32", "UINT32", "INT64", "UINT64", "FLOAT16",
           "BFLOAT16", "FLOAT32", "FLOAT64", "SUM", "PROD", "MIN", "MAX", "AVG"] + \
    [cls.__name__ for cls in ERROR_CLASSES.values()]
