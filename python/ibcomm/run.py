"""python3 -m ibcomm.run [-m module | -c command | script] [args...]

Runs a script (like python3 would) so that an unhandled exception, or sys.exit() with a
failure status, in this rank aborts every ibcomm communicator and ends the process at once:
its connections close and the other ranks' pending calls fail with PeerError naming this
rank, instead of waiting for the deadline (as python3 -m mpi4py does with MPI_Abort). The
process does not wait for its other threads or atexit handlers: a rank that failed must not
hang.
"""
import os
import runpy
import sys
import traceback

from .comm import abort_all

_USAGE = "usage: python3 -m ibcomm.run [-m module | -c command | script] [args...]"


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass


def _fail(exc_type, exc, tb, status=1):
    """Reports the exception, aborts every communicator, ends the process with status."""
    try:
        if exc_type is not None:
            traceback.print_exception(exc_type, exc, tb)
        print("ibcomm.run: rank %s: %s: aborting every communicator" %
              (os.environ.get("IBCOMM_RANK", "?"),
               "unhandled %s" % exc_type.__name__ if exc_type else "exit status %d" % status),
              file=sys.stderr)
    finally:
        try:
            abort_all()
        finally:
            _flush()
            os._exit(status)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    try:
        if argv[0] == "-m" and len(argv) > 1:
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c" and len(argv) > 1:
            sys.argv = ["-c"] + argv[2:]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        elif argv[0].startswith("-"):
            print(_USAGE, file=sys.stderr)
            return 2
        else:
            sys.argv = argv
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None or e.code == 0:
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        _fail(None, None, None, e.code if isinstance(e.code, int) else 1)
    except BaseException:
        _fail(*sys.exc_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
