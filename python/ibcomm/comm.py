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

    # Each pair of a blocking call and its nonblocking twin checks its arguments once, in
    # _<name>_args(fn, ...) -> (the C call's arguments after the handle, the result, the
    # buffers a request keeps alive); _run and _start make the call.

    def _run(self, fn, args):
        """The blocking C call ibcomm_<fn> with its checked arguments: returns the result."""
        cargs, result, _ = args
        handle = self._h(fn)
        self._check(getattr(lib, "ibcomm_" + fn)(handle, *cargs), handle)
        return result

    def _start(self, fn, args):
        """The C i-call ibcomm_<fn> with its checked arguments: returns its Request."""
        cargs, result, keep = args
        handle = self._h(fn)
        req = ctypes.c_void_p()
        self._check(getattr(lib, "ibcomm_" + fn)(handle, *cargs, ctypes.byref(req)), handle)
        return _CRequest(self, result, keep, req.value)

    def _allreduce_args(self, fn, a, out, op, dtype):
        op = _as_op(op, fn)
        s, r = self._send_recv(fn, a, out, dtype)
        if r.count != s.count:
            raise ValueError("%s: out has %d elements but a has %d" % (fn, r.count, s.count))
        return (s.addr, r.addr, s.count, s.dtype, op), a if out is None else out, (s, r)

    def allreduce(self, a, out=None, op=Op.SUM, dtype=None):
        """out[i] = op over all ranks of a[i]; in place (into a) without out. Returns the result."""
        return self._run("allreduce", self._allreduce_args("allreduce", a, out, op, dtype))

    def iallreduce(self, a, out=None, op=Op.SUM, dtype=None):
        """Nonblocking allreduce (ibcomm_iallreduce): returns a Request at once (req.test(),
        req.wait() -> result). Leave a and out alone until it completes. Collectives complete
        in the order issued, the same on every rank; a blocking call issued meanwhile runs
        after the pending ones. The library's progress thread moves them while Python runs."""
        return self._start("iallreduce", self._allreduce_args("iallreduce", a, out, op, dtype))

    def _broadcast_args(self, fn, a, root, dtype):
        root = self._root(root, fn)
        b = buffer(a, fn + ": a", self.rank != root, dtype)
        return (b.addr, b.count, b.dtype, root), a, (b,)

    def _broadcast_args(self, fn, a, root, dtype):
        root = self._root(root, fn)
        b = buffer(a, fn + ": a", self.rank != root, dtype)
        return (b.addr, b.count, b.dtype, root), a, (b,)

    def broadcast(self, a, root=0, dtype=None):
        """Copies root's a into a on every other rank. Returns a."""
        return self._run("broadcast", self._broadcast_args("broadcast", a, root, dtype))

    def ibroadcast(self, a, root=0, dtype=None):
        """Nonblocking broadcast: a Request whose wait() returns a."""
        return self._start("ibroadcast", self._broadcast_args("ibroadcast", a, root, dtype))

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

    def _allgather_args(self, fn, a, out, dtype):
        s = buffer(a, fn + ": a", False, dtype)
        r = buffer(out, fn + ": out", True, dtype)
        same_dtype(fn, s, r)
        self._blocks(fn, r, s, "out", "a")
        return (s.addr, r.addr, s.count, s.dtype), out, (s, r)

    def allgather(self, a, out, dtype=None):
        """out (size x len(a) elements) receives every rank's a in rank order. In place when a
        is this rank's block of out. Returns out."""
        return self._run("allgather", self._allgather_args("allgather", a, out, dtype))

    def iallgather(self, a, out, dtype=None):
        """Nonblocking allgather: a Request whose wait() returns out."""
        return self._start("iallgather", self._allgather_args("iallgather", a, out, dtype))

    def _reduce_scatter_args(self, fn, a, out, op, dtype):
        op = _as_op(op, fn)
        s = buffer(a, fn + ": a", False, dtype)
        r = buffer(out, fn + ": out", True, dtype)
        same_dtype(fn, s, r)
        self._blocks(fn, s, r, "a", "out")
        return (s.addr, r.addr, r.count, s.dtype, op), out, (s, r)

    def reduce_scatter(self, a, out, op=Op.SUM, dtype=None):
        """a holds size x len(out) elements; rank r receives block r of the reduction. In
        place when out is this rank's block of a. Returns out."""
        return self._run("reduce_scatter", self._reduce_scatter_args("reduce_scatter", a, out, op, dtype))

    def ireduce_scatter(self, a, out, op=Op.SUM, dtype=None):
        """Nonblocking reduce_scatter: a Request whose wait() returns out."""
        return self._start("ireduce_scatter", self._reduce_scatter_args("ireduce_scatter", a, out, op, dtype))

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

    # ---- counts per rank ----

    def _vector(self, fn, name, values):
        """A size_t[size] of the non-negative ints in values (ValueError otherwise)."""
        values = list(values)
        if len(values) != self.size:
            raise ValueError("%s: %s has %d entries, expected one per rank (%d)" %
                             (fn, name, len(values), self.size))
        ints = [_as_int(v, name, fn) for v in values]
        if any(v < 0 for v in ints):
            raise ValueError("%s: %s has a negative entry: %r" % (fn, name, ints))
        return (ctypes.c_size_t * self.size)(*ints)

    def _layout(self, fn, buf, bname, counts, cname, displs, dname):
        """counts and displs (default: the blocks one after another) as C vectors; every block
        must lie inside buf."""
        c = self._vector(fn, cname, counts)
        if displs is None:
            displs, off = [], 0
            for v in c:
                displs.append(off)
                off += v
        d = self._vector(fn, dname, displs)
        for j in range(self.size):
            if c[j] and d[j] + c[j] > buf.count:
                raise ValueError("%s: block %d (%s[%d] %d + %s[%d] %d) ends past the %d elements of %s" %
                                 (fn, j, dname, j, d[j], cname, j, c[j], buf.count, bname))
        return c, d

    def allgatherv(self, a, out, counts, displs=None, dtype=None):
        """out receives rank j's a (counts[j] elements) at displs[j] (default: the blocks in
        rank order, one after another). Every rank passes the same counts, and counts[j] is
        rank j's len(a) (else MismatchError on every rank). In place when a is this rank's
        block of out. Returns out."""
        handle = self._h("allgatherv")
        s = buffer(a, "allgatherv: a", False, dtype)
        r = buffer(out, "allgatherv: out", True, dtype)
        same_dtype("allgatherv", s, r)
        c, d = self._layout("allgatherv", r, "out", counts, "counts", displs, "displs")
        self._check(lib.ibcomm_allgatherv(handle, s.addr, s.count, r.addr, c, d, s.dtype), handle)
        return out

    def alltoallv(self, a, out, sendcounts, recvcounts, sdispls=None, rdispls=None, dtype=None):
        """sendcounts[j] elements of a (at sdispls[j]) go to rank j, into its out at
        rdispls[i] (i the sender), where its recvcounts[i] must be the same number (else
        MismatchError on every rank). Displacements default to the blocks in rank order, one
        after another. Never in place. Returns out."""
        handle = self._h("alltoallv")
        s = buffer(a, "alltoallv: a", False, dtype)
        r = buffer(out, "alltoallv: out", True, dtype)
        same_dtype("alltoallv", s, r)
        sc, sd = self._layout("alltoallv", s, "a", sendcounts, "sendcounts", sdispls, "sdispls")
        rc, rd = self._layout("alltoallv", r, "out", recvcounts, "recvcounts", rdispls, "rdispls")
        self._check(lib.ibcomm_alltoallv(handle, s.addr, sc, sd, r.addr, rc, rd, s.dtype), handle)
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

    def _send_args(self, fn, a, peer, tag, dtype):
        peer = _as_int(peer, "peer", fn)
        tag = self._tag(tag, fn)
        s = buffer(a, fn + ": a", False, dtype)
        return (s.addr, s.count, s.dtype, peer, tag), None, (s,)

    def send(self, a, peer, tag=0, dtype=None):
        """Sends a to peer, matched by (peer, tag) in order with its recv."""
        self._run("send", self._send_args("send", a, peer, tag, dtype))

    def isend(self, a, peer, tag=0, dtype=None):
        """Nonblocking send: a Request whose wait() returns None. Leave a alone until then."""
        return self._start("isend", self._send_args("isend", a, peer, tag, dtype))

    def _recv_args(self, fn, a, peer, tag, dtype):
        peer = _as_int(peer, "peer", fn)
        tag = self._tag(tag, fn)
        r = buffer(a, fn + ": a", True, dtype)
        return (r.addr, r.count, r.dtype, peer, tag), a, (r,)

    def recv(self, a, peer, tag=0, dtype=None):
        """Receives into a the message of peer with this tag; it must have exactly len(a)
        elements (else MismatchError). Returns a."""
        return self._run("recv", self._recv_args("recv", a, peer, tag, dtype))

    def irecv(self, a, peer, tag=0, dtype=None):
        """Nonblocking receive into a: a Request whose wait() returns a."""
        return self._start("irecv", self._recv_args("irecv", a, peer, tag, dtype))


__all__ = ["Comm", "Request", "abort_all", "as_dtype"]
