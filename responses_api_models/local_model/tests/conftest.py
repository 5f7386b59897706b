"""Shared fixtures: skip where the local-model extra or the weights are missing; load the real model once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVER_DIR = Path(__file__).resolve().parents[1]


def _missing_extra() -> str | None:
    for module in ("torch", "safetensors", "tokenizers"):
        try:
            __import__(module)
        except ImportError:
            return f"local-model extra not installed ({module} missing): pip install 'gymfleet[local-model]'"
    return None


def skip_without_extra() -> None:
    reason = _missing_extra()
    if reason:
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The converted default weights (converted on first use: about a minute, once per machine)."""
    reason = _missing_extra()
    if reason:
        pytest.skip(reason)
    from gymfleet.local_model import WeightsNotFoundError, find_gguf, prepare_weights

    try:
        gguf = find_gguf()
    except WeightsNotFoundError as exc:
        pytest.skip(f"no weights: {exc}")
    return prepare_weights(gguf)


@pytest.fixture(scope="session")
def app_module() -> Any:
    skip_without_extra()
    import importlib.util
    import sys

    name = "gymfleet_test_local_model_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVER_DIR / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def local_server(weights_dir: Path, app_module: Any) -> Iterator[Any]:
    """One LocalModel for the session (its worker thread is stopped at the end)."""
    server = app_module.LocalModel(
        config={
            "name": "policy_model",
            "max_batch_size": 8,
            "max_context_tokens": 1024,
            "max_batch_tokens": 8192,
        }
    )
    try:
        yield server
    finally:
        server.close()
