"""allgatherv and alltoallv: uneven and zero counts, every datatype, default and explicit
displacements, in place; counts that disagree raise MismatchError on every rank, naming the
counts, and the communicator goes on; bad count vectors are refused before anything is sent."""
import numpy as np
import pytest

import ibcomm
from conftest import DTYPES, storage, override, encode, assert_same


def vals(dt, src, dst, n):
    """What rank src sends to rank dst: small integers, exact in every datatype."""
    return encode(dt, [(src * 5 + dst * 3 + i) % 7 - (0 if dt.startswith("uint") else 3) for i in range(n)])


def ag_counts(size):
    return [(j * 3 + 1) % 5 for j in range(size)]  # 1, 4, 2, 0, 3, ...: zeros and uneven


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("dt", DTYPES)
def test_allgatherv(comm, dt, inplace):
    counts = ag_counts(comm.size)
    want = np.concatenate([vals(dt, j, 0, counts[j]) for j in range(comm.size)])
    out = np.full(sum(counts), 99, dtype=storage(dt))
    off = sum(counts[:comm.rank])
    if inplace:
        a = out[off:off + counts[comm.rank]]
        a[:] = vals(dt, comm.rank, 0, counts[comm.rank])
    else:
        a = vals(dt, comm.rank, 0, counts[comm.rank])
    assert comm.allgatherv(a, out, counts, dtype=override(dt)) is out
    assert_same(dt, out, want, "allgatherv %s" % dt)


def test_allgatherv_displs_gaps(comm):
    counts = ag_counts(comm.size)
    displs, off = [0] * comm.size, 2
    for j in reversed(range(comm.size)):  # reverse rank order, 2 elements before each block
        displs[j] = off
        off += counts[j] + 2
    out = np.full(off, -1, dtype=np.int32)
    comm.allgatherv(vals("int32", comm.rank, 0, counts[comm.rank]), out, counts, displs)
    want = np.full(off, -1, dtype=np.int32)
    for j in range(comm.size):
        want[displs[j]:displs[j] + counts[j]] = vals("int32", j, 0, counts[j])
    assert_same("int32", out, want, "allgatherv with gaps")


@pytest.mark.parametrize("dt", DTYPES)
def test_alltoallv(comm, dt):
    n = comm.size
    scounts = [(comm.rank + j) % 3 for j in range(n)]       # what this rank sends to j
    rcounts = [(j + comm.rank) % 3 for j in range(n)]       # what j sends here
    a = np.concatenate([vals(dt, comm.rank, j, scounts[j]) for j in range(n)])
    sent = a.copy()
    out = np.full(sum(rcounts), 99, dtype=storage(dt))
    assert comm.alltoallv(a, out, scounts, rcounts, dtype=override(dt)) is out
    want = np.concatenate([vals(dt, j, comm.rank, rcounts[j]) for j in range(n)])
    assert_same(dt, out, want, "alltoallv %s" % dt)
    assert_same(dt, a, sent, "alltoallv: a changed")


def test_alltoallv_all_zero(comm):
    z = [0] * comm.size
    out = np.zeros(0, np.float32)
    assert comm.alltoallv(np.zeros(0, np.float32), out, z, z) is out


def test_allgatherv_mismatch(comm):
    counts = ag_counts(comm.size)
    mine = list(counts)
    if comm.rank == comm.size - 1:
        mine[0] += 1  # expects one element more from rank 0 than it sends
    out = np.full(sum(mine), 7, dtype=np.int64)
    with pytest.raises(ibcomm.MismatchError) as e:
        comm.allgatherv(np.zeros(counts[comm.rank], np.int64), out, mine)
    assert ("rank 0's sendcount is %d but rank %d's recvcounts[0] is %d (1 pair of ranks disagrees)" %
            (counts[0], comm.size - 1, counts[0] + 1)) in e.value.detail
    assert (out == 7).all()  # nothing written
    test_allgatherv(comm, "int32", False)  # the communicator goes on


def test_vector_errors(comm):
    with pytest.raises(ValueError, match="allgatherv: counts has 1 entries, expected one per rank"):
        comm.allgatherv(np.zeros(1, np.int32), np.zeros(8, np.int32), [1])
    with pytest.raises(ValueError, match="alltoallv: recvcounts has a negative entry"):
        comm.alltoallv(np.zeros(8, np.int32), np.zeros(8, np.int32), [1] * comm.size, [-1] * comm.size)
    with pytest.raises(ValueError, match="allgatherv: block .* ends past the 2 elements of out"):
        comm.allgatherv(np.zeros(1, np.int32), np.zeros(2, np.int32), [1] * comm.size)
    with pytest.raises(TypeError, match="allgatherv: counts must be an int"):
        comm.allgatherv(np.zeros(1, np.int32), np.zeros(8, np.int32), [1.0] * comm.size)
    with pytest.raises(TypeError, match="allgatherv: out is float32 but a is int32"):
        comm.allgatherv(np.zeros(1, np.int32), np.zeros(8, np.float32), [1] * comm.size)
