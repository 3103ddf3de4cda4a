"""A 2-rank job for test_abort.py: rank 1 raises while a non-daemon thread keeps its process
alive; rank 0 is in an allreduce and reports how it ended (and after how long)."""
import sys
import threading
import time

import numpy as np

import ibcomm

comm = ibcomm.Comm()
comm.barrier()  # every rank is connected
if comm.rank == 1:
    threading.Thread(target=time.sleep, args=(float(sys.argv[1]),)).start()
    raise RuntimeError("rank 1 fails on purpose")
t0 = time.monotonic()
try:
    comm.allreduce(np.ones(4))
except ibcomm.Error as e:
    print("ABORT-TEST %s %.3f %s" % (type(e).__name__, time.monotonic() - t0, e), flush=True)
    sys.exit(3)
print("ABORT-TEST none", flush=True)
sys.exit(4)
