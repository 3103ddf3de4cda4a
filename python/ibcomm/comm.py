"""The communicator and the request of a nonblocking call."""
import ctypes
import weakref

from . import _lib
from ._buffers import buffer, same_dtype, as_dtype
from ._lib import Op, lib

# Every open communicator, for abort_all() (ibcomm.run and abort_on_exception()).
_live = weakref.WeakSet()


def abort_all():
    """ibcomm_abort() on every open communicator of this process: the calls in progress return
    IBCOMM_ERR_ABORTED at once. Safe from any thread."""
    for comm in list(_live):
        comm.abort()


def _as_op(op, fn):
    if isinstance(op, str) and op.upper() in Op.__members__:
        return Op[op.upper()]
    try:
        return Op(op)
    except ValueError:
        raise ValueError("%s: op=%r is not one of ibcomm.SUM, PROD, MIN, MAX, AVG" % (fn, op)) from None


def _as_int(value, what, fn):
    """An int from an int or numpy integer; TypeError for anything else (bool and float too)."""
    if not isinstance(value, bool):
        try:
            return int(value.__index__())
        except (AttributeError, TypeError):
            pass
    raise TypeError("%s: %s must be an int, not %s" % (fn, what, type(value).__name__))


class Request:
    """A nonblocking call in flight. Its buffers belong to the library until it completes.

    test() returns False while it runs, True once it has completed (raising its ibcomm.Error
    if it failed); wait() blocks until it completes and returns the result (the output array)
    or raises. Both may be called again after completion.

    How it progresses is the backend's business: _poll() says whether it is complete,
    _block() waits; both return (status, detail) once complete, _poll() None before. The
    backend is _CRequest: the C library's ibcomm_i* calls, ibcomm_test and ibcomm_wait.
    """

    def __init__(self, comm, result, keep):
        self._comm = comm        # keeps the communicator open while the request lives
        self._result = result
        self._keep = keep        # the buffers stay exported (never resized or freed) until done
        self._outcome = None     # (status, detail) once complete

    def _poll(self):
        raise NotImplementedError

    def _block(self):
        raise NotImplementedError

    def _finish(self, outcome):
        self._outcome = outcome
        self._keep = None
        status, detail = outcome
        if status:
            raise _lib.error(status, detail)
        return self._result

    def test(self):
        """True once complete (raises its Error if it failed), False while in flight."""
        if self._outcome is None:
            outcome = self._poll()
            if outcome is None:
                return False
            self._finish(outcome)
            return True
        self._finish(self._outcome)
        return True

    def wait(self):
        """Blocks until complete; returns the result, or raises the call's Error."""
        if self._outcome is None:
            return self._finish(self._block())
        return self._finish(self._outcome)

    @property
    def done(self):
        """Complete (successfully or not), without raising."""
        return self._outcome is not None or self._poll() is not None


class _CRequest(Request):
    """A request of the C library's nonblocking API: ibcomm_test polls it, ibcomm_wait waits
    for it (both without the GIL); once complete, the C request is freed and its outcome
    kept. The library's progress thread moves it meanwhile."""

    def __init__(self, comm, result, keep, req):
        super().__init__(comm, result, keep)
        self._req = req          # ibcomm_request_t *; None once freed
        self._c_outcome = None   # (status, detail) once complete
        comm._reqs.add(self)

    def _poll(self):
        if self._req is not None:
            done = ctypes.c_int(0)
            status = lib.ibcomm_test(self._req, ctypes.byref(done))
            if not done.value:
                return None
            self._c_outcome = (status, _lib.last_error(None) if status else "")
            lib.ibcomm_request_free(self._req)
            self._req = None
        return self._c_outcome

    def _block(self):
        if self._req is not None:
            status = lib.ibcomm_wait(self._req)
            self._req = None
            self._c_outcome = (status, _lib.last_error(None) if status else "")
        return self._c_outcome

    def __del__(self):
        # a completed request nobody waited for is freed here; one in flight by ibcomm_destroy
        try:
            self._poll()
        except Exception:
            pass


class Comm:
    """A communicator: ibcomm.Comm() takes everything from the environment (IBCOMM_RANK,
    IBCOMM_SIZE, IBCOMM_ROOT, a launcher's variables...) like ibcomm_init_env(); keyword
    arguments set ibcomm_config_t fields instead (rank, size, root, transport, device,
    gid_index, ifname, timeout_ms, algo, job_key). Use it in a with block, or close() it.

    Buffers: any C-contiguous object with the buffer protocol (numpy arrays, bytearray,
    array.array...). The datatype is the buffer's (int8, uint8, int32, uint32, int64, uint64,
    float16, float32, float64); dtype= overrides it with one of the same element size, e.g.
    dtype=ibcomm.BFLOAT16 on a uint16 array. Wrong buffers raise TypeError or ValueError
    before anything is sent; failures of the library raise ibcomm.Error. Every call releases
    the GIL while it runs in the library.
    """

    _CONFIG = ("rank", "size", "root", "transport", "device", "gid_index", "ifname",
               "timeout_ms", "algo", "job_key")

    def __init__(self, **config):
        unknown = set(config) - set(self._CONFIG)
        if unknown:
            raise TypeError("Comm(): unknown setting %s (known: %s)" %
                            (", ".join(sorted(unknown)), ", ".join(self._CONFIG)))
        handle = ctypes.c_void_p()
        if any(v is not None for v in config.values()):
            status = lib.ibcomm_init(ctypes.byref(self._config(config)), ctypes.byref(handle))
        else:
            status = lib.ibcomm_init_env(ctypes.byref(handle))
        _lib.check(status, None)
        self._adopt(handle.value)

    @staticmethod
    def _config(config):
        cfg = _lib.Config(ctypes.sizeof(_lib.Config), -1, -1, None, None, None, -1, None, -1,
                          None, None)
        for key, value in config.items():
            if value is None:
                continue
            field = "nranks" if key == "size" else key
            setattr(cfg, field, value.encode() if isinstance(value, str) else value)
        return cfg

    @classmethod
    def _from_handle(cls, handle):
        self = cls.__new__(cls)
        self._adopt(handle)
        return self

    def _adopt(self, handle):
        self._handle = handle
        self._reqs = weakref.WeakSet()  # nonblocking requests not yet complete (close waits for them)
        self.rank = lib.ibcomm_rank(handle)
        self.size = lib.ibcomm_size(handle)
        self.transport = lib.ibcomm_transport(handle).decode()
        _live.add(self)

    # ---- life cycle ----

    def _h(self, fn):
        if self._handle is None:
            raise ValueError("%s: the communicator is closed" % fn)
        return self._handle

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Frees the communicator (not collective); waits for its nonblocking calls first."""
        if self._handle is None:
            return
        for req in list(self._reqs):
            req._block()
        handle, self._handle = self._handle, None
        _live.discard(self)
        _lib.check(lib.ibcomm_destroy(handle), None)

    def abort(self):
        """ibcomm_abort(): calls in progress (nonblocking ones too) fail with AbortedError at
        once, and every later call; close() still frees it. Safe from any thread."""
        handle = self._handle
        if handle is not None:
            lib.ibcomm_abort(handle)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # leaving on an exception: the other ranks must not wait for this one
            self.abort()
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self._handle is None else "rank %d of %d over %s" % (
            self.rank, self.size, self.transport)
        return "<ibcomm.Comm %s>" % state

    def split(self, color, key=0):
        """Collective: a new Comm of the ranks with the same color, ordered by (key, rank);
        None for a negative color."""
        color = _as_int(color, "color", "split")
        key = _as_int(key, "key", "split")
        handle = self._h("split")
        new = ctypes.c_void_p()
        _lib.check(lib.ibcomm_split(handle, color, key, ctypes.byref(new)), handle)
        return None if new.value is None else Comm._from_handle(new.value)

    def dup(self):
        """Collective: a new Comm of the same ranks whose traffic is independent."""
        handle = self._h("dup")
        new = ctypes.c_void_p()
        _lib.check(lib.ibcomm_dup(handle, ctypes.byref(new)), handle)
        return Comm._from_handle(new.value)

    # ---- argument checks ----

    def _root(self, root, fn):
        root = _as_int(root, "root", fn)
        if not 0 <= root < self.size:
            raise ValueError("%s: root %d is not a rank of this %d-rank communicator" % (fn, root, self.size))
        return root

    def _send_recv(self, fn, a, out, dtype):
        """(send, recv) buffers of a call that reads a and writes out, or a in place (out None)."""
        if out is None or out is a:
            s = buffer(a, fn + ": a", True, dtype)
            return s, s
        s = buffer(a, fn + ": a", False, dtype)
        r = buffer(out, fn + ": out", True, dtype)
        same_dtype(fn, s, r)
        return s, r

    def _blocks(self, fn, whole, part, wname, pname):
        if whole.count != part.count * self.size:
            raise ValueError("%s: %s has %d elements, %s %d: it must have size x %d = %d" %
                             (fn, wname, whole.count, pname, part.count, part.count,
                              part.count * self.size))

    def _check(self, status, handle):
        _lib.check(status, handle)

    # ---- collectives ----

    def allreduce(self, a, out=None, op=Op.SUM, dtype=None):
        """out[i] = op over all ranks of a[i]; in place (into a) without out. Returns the result."""
        op = _as_op(op, "allreduce")
        handle = self._h("allreduce")
        s, r = self._send_recv("allreduce", a, out, dtype)
        if r.count != s.count:
            raise ValueError("allreduce: out has %d elements but a has %d" % (r.count, s.count))
        self._check(lib.ibcomm_allreduce(handle, s.addr, r.addr, s.count, s.dtype, op), handle)
        return a if out is None else out

    def _start(self, fn, start, result, keep):
        """Runs the C i-call start(handle, req_ptr) and returns its Request."""
        handle = self._h(fn)
        req = ctypes.c_void_p()
        self._check(start(handle, ctypes.byref(req)), handle)
        return _CRequest(self, result, keep, req.value)

    def iallreduce(self, a, out=None, op=Op.SUM, dtype=None):
        """Nonblocking allreduce (ibcomm_iallreduce): returns a Request at once (req.test(),
        req.wait() -> result). Leave a and out alone until it completes. Collectives complete
        in the order issued, the same on every rank; a blocking call issued meanwhile runs
        after the pending ones. The library's progress thread moves them while Python runs."""
        op = _as_op(op, "iallreduce")
        self._h("iallreduce")
        s, r = self._send_recv("iallreduce", a, out, dtype)
        if r.count != s.count:
            raise ValueError("iallreduce: out has %d elements but a has %d" % (r.count, s.count))
        return self._start("iallreduce", lambda h, q: lib.ibcomm_iallreduce(h, s.addr, r.addr, s.count, s.dtype,
                                                                             op, q),
                           a if out is None else out, (s, r))

    def ibroadcast(self, a, root=0, dtype=None):
        """Nonblocking broadcast: a Request whose wait() returns a."""
        root = self._root(root, "ibroadcast")
        self._h("ibroadcast")
        b = buffer(a, "ibroadcast: a", self.rank != root, dtype)
        return self._start("ibroadcast", lambda h, q: lib.ibcomm_ibroadcast(h, b.addr, b.count, b.dtype, root, q),
                           a, (b,))

    def iallgather(self, a, out, dtype=None):
        """Nonblocking allgather: a Request whose wait() returns out."""
        self._h("iallgather")
        s = buffer(a, "iallgather: a", False, dtype)
        r = buffer(out, "iallgather: out", True, dtype)
        same_dtype("iallgather", s, r)
        self._blocks("iallgather", r, s, "out", "a")
        return self._start("iallgather", lambda h, q: lib.ibcomm_iallgather(h, s.addr, r.addr, s.count, s.dtype, q),
                           out, (s, r))

    def ireduce_scatter(self, a, out, op=Op.SUM, dtype=None):
        """Nonblocking reduce_scatter: a Request whose wait() returns out."""
        op = _as_op(op, "ireduce_scatter")
        self._h("ireduce_scatter")
        s = buffer(a, "ireduce_scatter: a", False, dtype)
        r = buffer(out, "ireduce_scatter: out", True, dtype)
        same_dtype("ireduce_scatter", s, r)
        self._blocks("ireduce_scatter", s, r, "a", "out")
        return self._start("ireduce_scatter",
                           lambda h, q: lib.ibcomm_ireduce_scatter(h, s.addr, r.addr, r.count, s.dtype, op, q),
                           out, (s, r))

    def broadcast(self, a, root=0, dtype=None):
        """Copies root's a into a on every other rank. Returns a."""
        root = self._root(root, "broadcast")
        handle = self._h("broadcast")
        b = buffer(a, "broadcast: a", self.rank != root, dtype)
        self._check(lib.ibcomm_broadcast(handle, b.addr, b.count, b.dtype, root), handle)
        return a

    def reduce(self, a, out=None, op=Op.SUM, root=0, dtype=None):
        """As allreduce, but only root receives (into out, or into a without out); out is
        unused on the other ranks. Returns the result at the root, None elsewhere."""
        op = _as_op(op, "reduce")
        root = self._root(root, "reduce")
        handle = self._h("reduce")
        if self.rank == root:
            s, r = self._send_recv("reduce", a, out, dtype)
            if r.count != s.count:
                raise ValueError("reduce: out has %d elements but a has %d" % (r.count, s.count))
            raddr = r.addr
        else:
            s = buffer(a, "reduce: a", False, dtype)
            raddr = None
        self._check(lib.ibcomm_reduce(handle, s.addr, raddr, s.count, s.dtype, op, root), handle)
        if self.rank != root:
            return None
        return a if out is None else out

    def allgather(self, a, out, dtype=None):
        """out (size x len(a) elements) receives every rank's a in rank order. In place when a
        is this rank's block of out. Returns out."""
        handle = self._h("allgather")
        s = buffer(a, "allgather: a", False, dtype)
        r = buffer(out, "allgather: out", True, dtype)
        same_dtype("allgather", s, r)
        self._blocks("allgather", r, s, "out", "a")
        self._check(lib.ibcomm_allgather(handle, s.addr, r.addr, s.count, s.dtype), handle)
        return out

    def reduce_scatter(self, a, out, op=Op.SUM, dtype=None):
        """a holds size x len(out) elements; rank r receives block r of the reduction. In
        place when out is this rank's block of a. Returns out."""
        op = _as_op(op, "reduce_scatter")
        handle = self._h("reduce_scatter")
        s = buffer(a, "reduce_scatter: a", False, dtype)
        r = buffer(out, "reduce_scatter: out", True, dtype)
        same_dtype("reduce_scatter", s, r)
        self._blocks("reduce_scatter", s, r, "a", "out")
        self._check(lib.ibcomm_reduce_scatter(handle, s.addr, r.addr, r.count, s.dtype, op), handle)
        return out

    def gather(self, a, out=None, root=0, dtype=None):
        """root's out (size x len(a) elements) receives every rank's a in rank order; out is
        unused elsewhere. Returns out at the root, None elsewhere."""
        root = self._root(root, "gather")
        handle = self._h("gather")
        s = buffer(a, "gather: a", False, dtype)
        raddr = None
        if self.rank == root:
            if out is None:
                raise ValueError("gather: out is required at the root (rank %d)" % root)
            r = buffer(out, "gather: out", True, dtype)
            same_dtype("gather", s, r)
            self._blocks("gather", r, s, "out", "a")
            raddr = r.addr
        self._check(lib.ibcomm_gather(handle, s.addr, raddr, s.count, s.dtype, root), handle)
        return out if self.rank == root else None

    def scatter(self, a, out, root=0, dtype=None):
        """root's a (size x len(out) elements) is cut in blocks; rank r receives block r into
        out. a is unused on the other ranks (may be None). Returns out."""
        root = self._root(root, "scatter")
        handle = self._h("scatter")
        r = buffer(out, "scatter: out", True, dtype)
        saddr = None
        if self.rank == root:
            if a is None:
                raise ValueError("scatter: a is required at the root (rank %d)" % root)
            s = buffer(a, "scatter: a", False, dtype)
            same_dtype("scatter", s, r)
            self._blocks("scatter", s, r, "a", "out")
            saddr = s.addr
        self._check(lib.ibcomm_scatter(handle, saddr, r.addr, r.count, r.dtype, root), handle)
        return out

    def alltoall(self, a, out, dtype=None):
        """Block j of a goes to rank j, into block i of its out (i the sender); a and out hold
        size blocks each. Never in place. Returns out."""
        handle = self._h("alltoall")
        s = buffer(a, "alltoall: a", False, dtype)
        r = buffer(out, "alltoall: out", True, dtype)
        same_dtype("alltoall", s, r)
        if s.count != r.count or s.count % self.size:
            raise ValueError("alltoall: a and out must have the same number of elements, a multiple of "
                             "the size %d (a has %d, out %d)" % (self.size, s.count, r.count))
        self._check(lib.ibcomm_alltoall(handle, s.addr, r.addr, s.count // self.size, s.dtype), handle)
        return out

    def barrier(self):
        """Returns when every rank has entered the barrier."""
        handle = self._h("barrier")
        self._check(lib.ibcomm_barrier(handle), handle)

    # ---- point to point ----

    @staticmethod
    def _tag(tag, fn):
        tag = _as_int(tag, "tag", fn)
        if not 0 <= tag <= 0xFFFFFFFF:
            raise ValueError("%s: tag %d is not a 32-bit unsigned integer" % (fn, tag))
        return tag

    def send(self, a, peer, tag=0, dtype=None):
        """Sends a to peer, matched by (peer, tag) in order with its recv."""
        peer = _as_int(peer, "peer", "send")
        tag = self._tag(tag, "send")
        handle = self._h("send")
        s = buffer(a, "send: a", False, dtype)
        self._check(lib.ibcomm_send(handle, s.addr, s.count, s.dtype, peer, tag), handle)

    def isend(self, a, peer, tag=0, dtype=None):
        """Nonblocking send: a Request whose wait() returns None. Leave a alone until then."""
        peer = _as_int(peer, "peer", "isend")
        tag = self._tag(tag, "isend")
        self._h("isend")
        s = buffer(a, "isend: a", False, dtype)
        return self._start("isend", lambda h, q: lib.ibcomm_isend(h, s.addr, s.count, s.dtype, peer, tag, q),
                           None, (s,))

    def irecv(self, a, peer, tag=0, dtype=None):
        """Nonblocking receive into a: a Request whose wait() returns a."""
        peer = _as_int(peer, "peer", "irecv")
        tag = self._tag(tag, "irecv")
        self._h("irecv")
        r = buffer(a, "irecv: a", True, dtype)
        return self._start("irecv", lambda h, q: lib.ibcomm_irecv(h, r.addr, r.count, r.dtype, peer, tag, q),
                           a, (r,))

    def recv(self, a, peer, tag=0, dtype=None):
        """Receives into a the message of peer with this tag; it must have exactly len(a)
        elements (else MismatchError). Returns a."""
        peer = _as_int(peer, "peer", "recv")
        tag = self._tag(tag, "recv")
        handle = self._h("recv")
        r = buffer(a, "recv: a", True, dtype)
        self._check(lib.ibcomm_recv(handle, r.addr, r.count, r.dtype, peer, tag), handle)
        return a


__all__ = ["Comm", "Request", "abort_all", "as_dtype"]
