"""The package itself: its tables against the library, the communicator's attributes,
split, dup, nonblocking allreduce."""
import socket
import threading
import time

import numpy as np
import pytest

import ibcomm
from ibcomm import _lib


def test_tables_match_the_library():
    for status, name, cls, text in ibcomm.STATUS_TABLE:
        assert _lib.lib.ibcomm_strerror(status).decode() == text, name
        assert getattr(ibcomm, cls).__name__ == cls
        assert issubclass(getattr(ibcomm, cls), ibcomm.Error)
    assert _lib.lib.ibcomm_strerror(0).decode() == "success"
    for dt in ibcomm.DType:
        assert _lib.lib.ibcomm_dtype_size(dt) == _lib.DTYPE_SIZE[dt], dt
    assert _lib.lib.ibcomm_dtype_size(len(ibcomm.DType)) == 0  # IBCOMM_DTYPE_COUNT


def test_attributes(comm):
    assert comm.size == 3
    assert 0 <= comm.rank < comm.size
    assert comm.transport == "tcp"
    assert "rank %d of 3" % comm.rank in repr(comm)
    ranks = np.zeros(comm.size, dtype=np.int32)
    comm.allgather(np.array([comm.rank], dtype=np.int32), ranks)
    assert list(ranks) == list(range(comm.size))


def test_dup(comm):
    with comm.dup() as d:
        assert (d.rank, d.size) == (comm.rank, comm.size)
        a = np.array([d.rank], dtype=np.int64)
        d.allreduce(a)
        assert a[0] == sum(range(d.size))
    assert d.closed
    with pytest.raises(ValueError, match="closed"):
        d.barrier()


def test_split(comm):
    # even ranks in one communicator, odd ones in another, ordered by descending old rank
    sub = comm.split(comm.rank % 2, key=-comm.rank)
    members = [r for r in range(comm.size) if r % 2 == comm.rank % 2]
    assert sub.size == len(members)
    assert sub.rank == sorted(members, reverse=True).index(comm.rank)
    a = np.array([comm.rank], dtype=np.int32)
    sub.allreduce(a)
    assert a[0] == sum(members)
    sub.close()
    none = comm.split(-1 if comm.rank == 0 else 0)
    if comm.rank == 0:
        assert none is None
    else:
        assert none.size == comm.size - 1
        none.close()


def test_iallreduce(comm):
    a = np.arange(5, dtype=np.float32) + comm.rank
    out = np.zeros(5, dtype=np.float32)
    req = comm.iallreduce(a, out, op=ibcomm.SUM)
    assert isinstance(req, ibcomm.Request)
    assert req.wait() is out
    assert req.test() is True and req.done
    assert np.array_equal(out, np.arange(5, dtype=np.float32) * comm.size + sum(range(comm.size)))


def test_iallreduce_overlaps_blocking_calls(comm):
    """Several in flight, in place and not, completed by test() polling, while the
    communicator's blocking calls go on."""
    bufs = [np.full(1000, comm.rank + i, dtype=np.int64) for i in range(4)]
    reqs = [comm.iallreduce(b, op=ibcomm.MAX) for b in bufs]
    b = np.array([comm.rank], dtype=np.int32)
    comm.allreduce(b)
    comm.barrier()
    assert b[0] == sum(range(comm.size))
    deadline = time.monotonic() + 60
    while not all(r.test() for r in reqs):
        assert time.monotonic() < deadline, "iallreduce never completed"
        time.sleep(0.001)
    for i, (r, buf) in enumerate(zip(reqs, bufs)):
        assert r.wait() is buf
        assert (buf == comm.size - 1 + i).all()


def test_iallreduce_error_is_raised_by_wait(comm):
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(3)
        ro.flags.writeable = False
        comm.iallreduce(ro)
    with comm.dup() as d:
        a = np.zeros(4 + d.rank, dtype=np.float32)  # a different count on every rank
        req = d.iallreduce(a)
        with pytest.raises(ibcomm.MismatchError) as e:
            req.wait()
        assert "allreduce" in e.value.detail
        with pytest.raises(ibcomm.MismatchError):
            req.test()


def test_nonblocking_kinds(comm):
    """ibroadcast, iallgather, ireduce_scatter, isend/irecv in flight together, in issue order."""
    n, me = comm.size, comm.rank
    b = np.arange(6, dtype=np.int32) if me == n - 1 else np.zeros(6, dtype=np.int32)
    g = np.zeros(3 * n, dtype=np.float64)
    rs_in = np.arange(2 * n, dtype=np.int64) + me
    rs = np.zeros(2, dtype=np.int64)
    got = np.zeros(4, dtype=np.uint8)
    rq = comm.irecv(got, (me - 1) % n, tag=7)
    reqs = [comm.ibroadcast(b, root=n - 1),
            comm.iallgather(np.full(3, me, dtype=np.float64), g),
            comm.ireduce_scatter(rs_in, rs, op=ibcomm.MIN),
            comm.isend(np.full(4, me, dtype=np.uint8), (me + 1) % n, tag=7)]
    assert reqs[0].wait() is b and reqs[1].wait() is g and reqs[2].wait() is rs
    assert reqs[3].wait() is None
    assert rq.wait() is got
    assert (b == np.arange(6)).all()
    assert (g == np.repeat(np.arange(n, dtype=np.float64), 3)).all()
    assert (rs == np.arange(2 * me, 2 * me + 2)).all()
    assert (got == (me - 1) % n).all()


def test_nonblocking_errors(comm):
    with pytest.raises(ValueError):
        comm.ibroadcast(np.zeros(3), root=comm.size)
    with pytest.raises(ibcomm.InvalidError, match="peer"):
        comm.isend(np.zeros(3), comm.size + 5)
    with comm.dup() as d:
        out = np.zeros(1, dtype=np.int32)
        req = d.irecv(out, (d.rank + 1) % d.size, tag=3)
        assert req.test() is False and not req.done
        d.send(np.array([d.rank], dtype=np.int32), (d.rank - 1) % d.size, tag=3)
        assert req.wait() is out and out[0] == (d.rank + 1) % d.size


def test_gil_released(comm):
    """Another thread runs while this one waits in a collective for a late rank."""
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)
    t = threading.Thread(target=tick)
    t.start()
    try:
        if comm.rank == 0:
            time.sleep(0.5)  # the others wait for rank 0 in the barrier
        n0 = len(ticks)
        comm.barrier()
        if comm.rank != 0:
            assert len(ticks) - n0 >= 10, "the ticking thread stalled during the barrier"
    finally:
        stop.set()
        t.join()


def test_init_error_has_detail():
    with pytest.raises(ibcomm.InvalidError) as e:
        ibcomm.Comm(rank=5, size=2, root="127.0.0.1:1")
    assert e.value.status == -1
    assert "rank" in e.value.detail and "5" in e.value.detail
    assert str(e.value).startswith("IBCOMM_ERR_INVALID")
    with pytest.raises(TypeError, match="unknown setting"):
        ibcomm.Comm(nranks=2)


def test_comm_from_config(comm):
    """Keyword settings: a 1-rank communicator of this process alone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ibcomm.Comm(rank=0, size=1, root="127.0.0.1:%d" % port, transport="tcp", timeout_ms=10000) as c:
        assert (c.rank, c.size) == (0, 1)
        a = np.arange(3, dtype=np.int32)
        c.allreduce(a)
        assert list(a) == [0, 1, 2]


def test_abort_fails_calls(comm):
    with comm.dup() as d:
        d.abort()
        with pytest.raises(ibcomm.AbortedError) as e:
            d.barrier()
        assert e.value.status == -9 and "abort" in e.value.detail
