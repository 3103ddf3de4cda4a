"""Wrong buffers are refused before anything is sent (every rank makes the same wrong call,
so the ranks stay in step); failures of the library raise ibcomm.Error with the detail."""
import pickle

import numpy as np
import pytest

import ibcomm


def test_not_a_buffer(comm):
    with pytest.raises(TypeError, match="allreduce: a: a list is not a buffer"):
        comm.allreduce([1, 2, 3])


def test_non_contiguous(comm):
    a = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="not C-contiguous"):
        comm.allreduce(a[:, 1])
    with pytest.raises(ValueError, match="broadcast: a: .*not C-contiguous"):
        comm.broadcast(a.T)
    with pytest.raises(ValueError, match="allgather: out: .*not C-contiguous"):
        comm.allgather(np.zeros(2, np.float32), np.zeros((6, 2), np.float32)[:, 0])


def test_read_only(comm):
    ro = np.zeros(4, dtype=np.int32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="allreduce: a: the buffer is read-only"):
        comm.allreduce(ro)
    with pytest.raises(ValueError, match="recv: a: .*read-only"):
        comm.recv(ro, 0)
    with pytest.raises(ValueError, match="allreduce: out: .*read-only"):
        comm.allreduce(np.zeros(4, np.int32), ro)
    with pytest.raises(ValueError, match="read-only"):
        comm.allreduce(b"abcd")
    # read-only where only read: fine
    out = np.zeros(4, dtype=np.int32)
    comm.allreduce(ro, out)
    assert not out.any()


@pytest.mark.parametrize("dtype", ["int16", "uint16", "bool", "complex64", "longdouble"])
def test_unsupported_dtype(comm, dtype):
    with pytest.raises(TypeError, match="no ibcomm datatype"):
        comm.allreduce(np.zeros(3, dtype=dtype))


def test_uint16_hint(comm):
    with pytest.raises(TypeError, match="dtype=ibcomm.BFLOAT16"):
        comm.allreduce(np.zeros(3, dtype=np.uint16))


def test_big_endian(comm):
    with pytest.raises(TypeError, match="byte order"):
        comm.allreduce(np.zeros(3, dtype=">f4"))


def test_dtype_override(comm):
    with pytest.raises(TypeError, match="dtype=bfloat16 has 2-byte elements, the buffer's are 4"):
        comm.allreduce(np.zeros(3, np.float32), dtype=ibcomm.BFLOAT16)
    with pytest.raises(TypeError, match="not an ibcomm datatype"):
        comm.allreduce(np.zeros(3, np.float32), dtype="float128")
    # names and numpy dtypes work too: int32 bits reduced as float32
    a = np.ones(2, np.float32).view(np.int32)
    comm.allreduce(a, dtype="float32")
    assert (a.view(np.float32) == comm.size).all()
    b = np.ones(2, np.float32).view(np.uint32)
    comm.allreduce(b, dtype=np.float32)
    assert (b.view(np.float32) == comm.size).all()


def test_wrong_out_dtype(comm):
    with pytest.raises(TypeError, match="allreduce: out is float64 but a is float32"):
        comm.allreduce(np.zeros(3, np.float32), np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="allgather: out is int32 but a is int64"):
        comm.allgather(np.zeros(1, np.int64), np.zeros(3, np.int32))


def test_wrong_sizes(comm):
    with pytest.raises(ValueError, match="allreduce: out has 4 elements but a has 3"):
        comm.allreduce(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"allgather: out has 5 elements, a 2: it must have size x 2 = 6"):
        comm.allgather(np.zeros(2), np.zeros(5))
    with pytest.raises(ValueError, match="reduce_scatter: a has 5 elements"):
        comm.reduce_scatter(np.zeros(5), np.zeros(2))
    with pytest.raises(ValueError, match="alltoall: .*multiple of the size 3"):
        comm.alltoall(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="gather: out is required at the root"):
        comm.gather(np.zeros(2), None, root=comm.rank)


def test_bad_arguments(comm):
    with pytest.raises(ValueError, match="op=7"):
        comm.allreduce(np.zeros(3), op=7)
    with pytest.raises(ValueError, match="op='mean'"):
        comm.allreduce(np.zeros(3), op="mean")
    with pytest.raises(ValueError, match="broadcast: root 3 is not a rank of this 3-rank communicator"):
        comm.broadcast(np.zeros(3), root=3)
    with pytest.raises(TypeError, match="root must be an int"):
        comm.reduce(np.zeros(3), root=1.0)
    with pytest.raises(TypeError, match="peer must be an int, not bool"):
        comm.send(np.zeros(3), True)
    comm.broadcast(np.zeros(3), root=np.int64(1))  # numpy integers are ints
    with pytest.raises(ValueError, match="tag -1"):
        comm.send(np.zeros(3), 0, tag=-1)
    with pytest.raises(ValueError, match="tag 4294967296"):
        comm.recv(np.zeros(3), 0, tag=1 << 32)


def test_library_invalid(comm):
    """Overlapping buffers: the library's own check, local to each rank."""
    a = np.zeros(8, dtype=np.float32)
    with pytest.raises(ibcomm.InvalidError) as e:
        comm.allreduce(a[0:4], a[2:6])
    err = e.value
    assert isinstance(err, ibcomm.Error)
    assert err.status == -1 and err.name == "IBCOMM_ERR_INVALID"
    assert "allreduce on rank %d" % comm.rank in err.detail and "overlap" in err.detail
    assert err.detail in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ibcomm.InvalidError and (again.status, again.detail) == (err.status, err.detail)
    with pytest.raises(ibcomm.InvalidError, match="peer"):
        comm.send(np.zeros(1), comm.size)
    comm.barrier()  # still in step


def test_mismatch_detail(comm):
    """Ranks that call with different counts: MismatchError on every rank, naming the call."""
    a = np.zeros(3 + comm.rank, dtype=np.float32)
    with pytest.raises(ibcomm.MismatchError) as e:
        comm.allreduce(a)
    assert e.value.status == -8
    assert "allreduce" in e.value.detail
    assert not a.any()
    comm.barrier()  # the communicator stays usable after a mismatch
