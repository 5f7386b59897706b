"""Fixtures for the config tests: a clean working directory and environment per test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"

_ENV_VARS = (
    "GYMFLEET_EXTRA_ROOTS",
    "NEMO_GYM_EXTRA_ROOTS",
    "GYMFLEET_CONFIG_FILE",
    "NEMO_GYM_CONFIG_DICT",
    "NEMO_GYM_CONFIG_PATH",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty cwd with none of our env vars set (restored afterwards)."""
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write("a/b.yaml", text)`` writes dedented text under tmp_path and returns the path."""

    def _write(rel: str, text: str) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write
