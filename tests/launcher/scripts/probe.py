"""Print, as one JSON line, what a server process sees of its start-up (to compare exec and zygote)."""

from __future__ import annotations

import json
import os
import random
import socket
import sys

fds = {}
for number in [int(n) for n in os.environ.get("PROBE_FDS", "").split(",") if n]:
    with socket.socket(fileno=os.dup(number)) as sock:
        fds[str(number)] = sock.getsockname()[1]
with open("/proc/self/cmdline", "rb") as handle:
    cmdline = [part.decode() for part in handle.read().split(b"\0") if part]
print(json.dumps({
    "argv": sys.argv,
    "path": sys.path,
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items() if k != "GYMFLEET_PARENT_PID"},
    "parent_pid_env": os.environ.get("GYMFLEET_PARENT_PID"),
    "ppid": os.getppid(),
    "leads_group": os.getpgrp() == os.getpid() == os.getsid(0),
    "stdin": sys.stdin.read(),
    "stdout": [sys.stdout.line_buffering, sys.stdout.write_through, sys.stdout.encoding],
    "stderr": [sys.stderr.line_buffering, sys.stderr.write_through, sys.stderr.errors],
    "fds": fds,
    "random": random.random(),
    "main": __name__,
    "file": __file__,
    "cmdline": cmdline,
}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
