"""Functions the Ray tests offload (shipped to the cluster by value: its workers cannot import tests/)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def double(x: int) -> int:
    return 2 * x


def boom(x: int) -> int:
    raise ValueError(f"bad input {x}")


def spin_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        pass


def where() -> tuple[int, int]:
    time.sleep(0.05)
    return os.getpid(), os.getsid(0)
