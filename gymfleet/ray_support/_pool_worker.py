"""A local pool worker process: reads framed pickled calls on stdin, answers on its private copy of stdout.

Started by :class:`gymfleet.ray_support.LocalPool` (``python -c "...import main; main()"``). What the
called functions print goes to stderr (fd 1 is pointed there), so it can never corrupt the answer stream.
The kernel kills the worker when the process that started it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal
import struct
import sys
import traceback
from typing import Any, BinaryIO

from gymfleet.ray_support._remote_call import traced_call

MEMORY_LIMIT_ENV = "GYMFLEET_POOL_MEMORY_LIMIT"
PRELOAD_ENV = "GYMFLEET_POOL_PRELOAD"
_HEADER = struct.Struct("!Q")
_PR_SET_PDEATHSIG = 1


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed stdin still ends the loop
        pass


def main() -> None:
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # prints of the called functions land in stderr, never in the answer stream
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    for module in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
        __import__(module)  # pay for heavy imports (sympy) before the first call, not during it
    calls = sys.stdin.buffer
    write_frame(answers, ("ready", os.getpid()))
    while True:
        frame = read_frame(calls)
        if frame is None:
            return  # the pool closed our stdin: exit quietly
        try:
            fn, args, kwargs = pickle.loads(frame)
            write_frame(answers, ("ok", traced_call(fn, args, kwargs)))
        except BaseException as exc:  # report everything; the pool decides what it means
            answer = ("error", type(exc).__name__, str(exc)[:2000], traceback.format_exc()[-8000:])
            try:
                write_frame(answers, answer)
            except Exception:
                return
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                return
