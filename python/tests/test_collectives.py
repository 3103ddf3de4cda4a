"""Every collective x every datatype (x every op, root, in place and not), exact results."""
import numpy as np
import pytest

import ibcomm
from conftest import DTYPES, OPS, storage, override, encode, inputs, reference, assert_same

N = 7  # elements per rank (per block)
ROOTS = [0, 1, 2]


def mine(dt, op, comm, n=N, salt=0):
    return encode(dt, inputs(dt, op, comm.size, comm.rank, n, salt))


def reduced(dt, op, comm, n=N, salt=0):
    per_rank = [inputs(dt, op, comm.size, r, n, salt) for r in range(comm.size)]
    return encode(dt, [reference(dt, op, [v[i] for v in per_rank]) for i in range(n)])


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dt", DTYPES)
def test_allreduce(comm, dt, op, inplace):
    a = mine(dt, op, comm)
    want = reduced(dt, op, comm)
    if inplace:
        got = comm.allreduce(a, op=getattr(ibcomm, op), dtype=override(dt))
        assert got is a
    else:
        sent = a.copy()
        out = np.full(N, 99, dtype=storage(dt))
        got = comm.allreduce(a, out, op=getattr(ibcomm, op), dtype=override(dt))
        assert got is out
        assert_same(dt, a, sent, "allreduce sendbuf")
    assert_same(dt, got, want, "allreduce %s %s" % (dt, op))


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("dt", DTYPES)
def test_broadcast(comm, dt, root):
    want = encode(dt, inputs(dt, "SUM", comm.size, root, N))
    a = want.copy() if comm.rank == root else np.zeros(N, dtype=storage(dt))
    assert comm.broadcast(a, root=root, dtype=override(dt)) is a
    assert_same(dt, a, want, "broadcast from %d" % root)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dt", DTYPES)
def test_reduce(comm, dt, op, root, inplace):
    a = mine(dt, op, comm)
    sent = a.copy()
    out = None if inplace else np.full(N, 99, dtype=storage(dt))
    got = comm.reduce(a, out, op=op, root=root, dtype=override(dt))
    if comm.rank != root:
        assert got is None
        assert_same(dt, a, sent, "reduce: a of a non-root")
        return
    assert got is (a if inplace else out)
    assert_same(dt, got, reduced(dt, op, comm), "reduce %s %s to %d" % (dt, op, root))
    if not inplace:
        assert_same(dt, a, sent, "reduce sendbuf")


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("dt", DTYPES)
def test_allgather(comm, dt, inplace):
    want = np.concatenate([encode(dt, inputs(dt, "SUM", comm.size, r, N)) for r in range(comm.size)])
    out = np.zeros(N * comm.size, dtype=storage(dt))
    if inplace:
        a = out[comm.rank * N:(comm.rank + 1) * N]
        a[:] = mine(dt, "SUM", comm)
    else:
        a = mine(dt, "SUM", comm)
    assert comm.allgather(a, out, dtype=override(dt)) is out
    assert_same(dt, out, want, "allgather")


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dt", DTYPES)
def test_reduce_scatter(comm, dt, op, inplace):
    a = mine(dt, op, comm, N * comm.size)
    want = reduced(dt, op, comm, N * comm.size)[comm.rank * N:(comm.rank + 1) * N]
    out = a[comm.rank * N:(comm.rank + 1) * N] if inplace else np.zeros(N, dtype=storage(dt))
    assert comm.reduce_scatter(a, out, op=op, dtype=override(dt)) is out
    assert_same(dt, out, want, "reduce_scatter %s %s" % (dt, op))


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("dt", DTYPES)
def test_gather(comm, dt, root, inplace):
    want = np.concatenate([encode(dt, inputs(dt, "SUM", comm.size, r, N)) for r in range(comm.size)])
    out = np.zeros(N * comm.size, dtype=storage(dt)) if comm.rank == root else None
    if inplace and comm.rank == root:
        a = out[root * N:(root + 1) * N]
        a[:] = mine(dt, "SUM", comm)
    else:
        a = mine(dt, "SUM", comm)
    got = comm.gather(a, out, root=root, dtype=override(dt))
    if comm.rank == root:
        assert got is out
        assert_same(dt, out, want, "gather to %d" % root)
    else:
        assert got is None


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "outofplace"])
@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("dt", DTYPES)
def test_scatter(comm, dt, root, inplace):
    whole = encode(dt, inputs(dt, "SUM", comm.size, root, N * comm.size))
    want = whole[comm.rank * N:(comm.rank + 1) * N].copy()
    a = whole if comm.rank == root else None
    if inplace and comm.rank == root:
        out = whole[root * N:(root + 1) * N]
    else:
        out = np.zeros(N, dtype=storage(dt))
    assert comm.scatter(a, out, root=root, dtype=override(dt)) is out
    assert_same(dt, out, want, "scatter from %d" % root)


@pytest.mark.parametrize("dt", DTYPES)
def test_alltoall(comm, dt):
    # block j of rank i holds f(i, j); rank j's block i must then be f(i, j)
    def block(i, j):
        return encode(dt, [value % 5 for value in range(i * 3 + j, i * 3 + j + N)])
    a = np.concatenate([block(comm.rank, j) for j in range(comm.size)])
    want = np.concatenate([block(i, comm.rank) for i in range(comm.size)])
    out = np.zeros(N * comm.size, dtype=storage(dt))
    assert comm.alltoall(a, out, dtype=override(dt)) is out
    assert_same(dt, out, want, "alltoall")


@pytest.mark.parametrize("dt", DTYPES)
def test_send_recv(comm, dt):
    # a ring, send-first and recv-first ranks alternating (never a deadlock)
    nxt, prv = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    a = mine(dt, "SUM", comm)
    got = np.zeros(N, dtype=storage(dt))
    if comm.rank % 2 == 0:
        comm.send(a, nxt, tag=7, dtype=override(dt))
        assert comm.recv(got, prv, tag=7, dtype=override(dt)) is got
    else:
        comm.recv(got, prv, tag=7, dtype=override(dt))
        comm.send(a, nxt, tag=7, dtype=override(dt))
    assert_same(dt, got, encode(dt, inputs(dt, "SUM", comm.size, prv, N)), "recv from %d" % prv)


def test_barrier(comm):
    comm.barrier()


@pytest.mark.parametrize("n", [0, 1, 300001])
def test_allreduce_counts(comm, n):
    """No element, one, and more than a transport chunk (several chunks per rank)."""
    a = np.arange(n, dtype=np.float32) % 17 + comm.rank
    want = (np.arange(n, dtype=np.float32) % 17) * comm.size + sum(range(comm.size))
    comm.allreduce(a)
    assert_same("float32", a, want, "allreduce of %d" % n)


def test_integer_sum_wraps(comm):
    a = np.full(5, 100, dtype=np.int8)
    comm.allreduce(a)
    assert_same("int8", a, encode("int8", [100 * comm.size] * 5), "int8 sum wraps")


def test_multidimensional(comm):
    """Shapes do not matter, only the elements (C order)."""
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4) + comm.rank
    comm.allreduce(a, op=ibcomm.MAX)
    assert_same("float64", a, np.arange(24, dtype=np.float64).reshape(2, 3, 4) + comm.size - 1, "3-d")


def test_other_buffers(comm):
    """bytearray, array.array, memoryview, bytes (read-only, as a send buffer)."""
    import array
    b = bytearray([comm.rank + 1] * 4)
    comm.allreduce(b)
    assert list(b) == [sum(range(1, comm.size + 1))] * 4
    ar = array.array("i", [comm.rank] * 3)
    comm.allreduce(memoryview(ar), op="max")
    assert list(ar) == [comm.size - 1] * 3
    out = bytearray(4)
    comm.allreduce(bytes([2, 3, 4, 5]), out, op=ibcomm.PROD)
    assert list(out) == [(v ** comm.size) % 256 for v in (2, 3, 4, 5)]
