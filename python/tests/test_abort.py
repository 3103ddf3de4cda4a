"""python3 -m ibcomm.run: an unhandled exception in one rank makes the others' pending calls
fail fast instead of waiting for the deadline. Rank 0 runs 2-rank jobs of its own
(abort_child.py), with and without ibcomm.run; the other ranks skip."""
import os
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job(runner, timeout_ms, linger):
    """Starts the 2 ranks of abort_child.py; returns (rank 0's result line, rank 1's stderr)."""
    env = dict(os.environ, IBCOMM_SIZE="2", IBCOMM_ROOT="127.0.0.1:%d" % free_port(),
               IBCOMM_TIMEOUT_MS=str(timeout_ms), IBCOMM_TRANSPORT="tcp")
    procs = []
    try:
        for rank in range(2):
            env["IBCOMM_RANK"] = str(rank)
            procs.append(subprocess.Popen(
                [sys.executable] + runner + [os.path.join(HERE, "abort_child.py"), str(linger)],
                env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out0, err0 = procs[0].communicate(timeout=120)
        lines = [line for line in out0.splitlines() if line.startswith("ABORT-TEST")]
        assert lines, "rank 0 printed no result: %s %s" % (out0, err0)
        procs[1].kill()
        _, err1 = procs[1].communicate(timeout=60)
        return lines[0].split(" ", 3), err1, procs[1].returncode
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_exception_aborts(comm):
    if comm.rank != 0:
        pytest.skip("rank 0 runs the jobs")
    t0 = time.monotonic()
    (tag, kind, secs, msg), err1, rc1 = job(["-m", "ibcomm.run"], timeout_ms=60000, linger=60)
    assert kind == "PeerError", msg
    assert float(secs) < 10, "rank 0 waited %s s (deadline 60 s)" % secs
    assert "rank 1" in msg, msg  # the rank that failed (the library's detail does not name the call)
    assert "RuntimeError: rank 1 fails on purpose" in err1
    assert "ibcomm.run: rank 1: unhandled RuntimeError: aborting every communicator" in err1
    assert rc1 == 1
    assert time.monotonic() - t0 < 30


def test_without_the_hook_the_deadline_ends_it(comm):
    """The contrast: rank 1's live thread keeps its process (and connections) up, so rank 0
    waits for its whole deadline."""
    if comm.rank != 0:
        pytest.skip("rank 0 runs the jobs")
    (tag, kind, secs, msg), err1, _ = job([], timeout_ms=3000, linger=30)
    assert kind == "TimedOutError", msg
    assert float(secs) >= 2.9, msg
    assert "RuntimeError: rank 1 fails on purpose" in err1
