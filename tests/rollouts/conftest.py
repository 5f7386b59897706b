from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_rows, write_jsonl


@pytest.fixture
def input_path(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "input.jsonl", make_rows(10))
