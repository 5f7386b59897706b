"""Listen on 127.0.0.1 (an OS-chosen port), print the port, and hold it until stdin closes."""

from __future__ import annotations

import socket
import sys

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    sys.stdin.read()  # returns when the test closes our stdin (or after it dies)
