"""Start the command in argv[1:] in a new session (no death signal), print its pid, and exit.

Like the launcher, it tells the child its parent's pid in GYMFLEET_PARENT_PID.
"""

from __future__ import annotations

import os
import subprocess
import sys

child = subprocess.Popen(
    sys.argv[1:],
    start_new_session=True,
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    env={**os.environ, "GYMFLEET_PARENT_PID": str(os.getpid())},
)
print(child.pid, flush=True)
