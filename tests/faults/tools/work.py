"""Functions for isolated-process tests: module-level and importable by name (a child process imports them)."""

from __future__ import annotations


def add(a: int, b: int) -> int:
    return a + b


def spin() -> None:
    """Never returns: a CPU-bound verifier stuck in pure Python."""
    x = 0
    while True:
        x += 1


def boom() -> None:
    raise ValueError("bad input")
