"""A Llama forward pass written for batched CPU decoding, over weights loaded from safetensors.

We own the forward (instead of calling transformers' model) so we also own the KV-cache layout that continuous
batching needs: one buffer per layer where each active sequence is a row, sequences join and leave between
decode steps, and rows of different lengths are left-padded. Numerics follow transformers'
``LlamaForCausalLM`` (RMSNorm in float32, rotate-half RoPE, grouped-query attention, SwiGLU MLP); ``tests``
compare logits with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

__all__ = ["KVCache", "LlamaConfig", "LlamaModel"]


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool

    @classmethod
    def from_json(cls, path: Path) -> LlamaConfig:
        raw: dict[str, Any] = json.loads(path.read_text())
        if raw.get("rope_type", "default") != "default":
            raise ValueError(f"{path}: rope_type {raw['rope_type']!r} is not supported (only 'default').")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            num_kv_heads=int(raw["num_key_value_heads"]),
            head_dim=int(raw["head_dim"]),
            rms_norm_eps=float(raw["rms_norm_eps"]),
            rope_theta=float(raw["rope_theta"]),
            max_position_embeddings=int(raw["max_position_embeddings"]),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )


@dataclass
class _Layer:
    input_norm: torch.Tensor
    qkv: torch.Tensor  # q, k and v projections stacked: one matmul instead of three
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # gate and up projections stacked
    down: torch.Tensor


class KVCache:
    """Keys and values of the active sequences: ``[layers, rows, kv_heads, columns, head_dim]`` per tensor.

    All rows share one column timeline; a decode step writes every row's new key at the same column. A row
    that joins is placed so its prompt ends at the current end of the timeline (left padding); ``valid`` marks
    real entries. Columns left of every row's start are reclaimed when space runs out.
    """

    def __init__(self, config: LlamaConfig, *, max_rows: int, max_columns: int, dtype: torch.dtype) -> None:
        self.config = config
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.dtype = dtype
        self.rows = 0
        self.end = 0  # columns [0, end) are in use
        self.starts: list[int] = []  # first column of each row
        self._allocate(min(256, max_columns))

    def _allocate(self, columns: int) -> None:
        c = self.config
        shape = (c.num_layers, self.max_rows, c.num_kv_heads, columns, c.head_dim)
        self.keys = torch.zeros(shape, dtype=self.dtype)
        self.values = torch.zeros(shape, dtype=self.dtype)
        self.valid = torch.zeros((self.max_rows, columns), dtype=torch.bool)
        self.capacity = columns

    def reset(self) -> None:
        """Forget every row; give back a grown buffer (memory returns to the baseline when idle)."""
        self.rows, self.end, self.starts = 0, 0, []
        if self.capacity > 256:
            self._allocate(min(256, self.max_columns))
        else:
            self.valid.zero_()

    def _shift(self, delta: int) -> None:
        """Move columns right (delta > 0) or left (delta < 0) by ``|delta|``."""
        if delta == 0:
            return
        r, n = self.rows, self.end
        if delta > 0:
            self.keys[:, :r, :, delta : delta + n] = self.keys[:, :r, :, :n].clone()
            self.values[:, :r, :, delta : delta + n] = self.values[:, :r, :, :n].clone()
            self.valid[:r, delta : delta + n] = self.valid[:r, :n].clone()
            self.valid[:r, :delta] = False
        else:
            d = -delta
            self.keys[:, :r, :, : n - d] = self.keys[:, :r, :, d:n].clone()
            self.values[:, :r, :, : n - d] = self.values[:, :r, :, d:n].clone()
            self.valid[:r, : n - d] = self.valid[:r, d:n].clone()
            self.valid[:r, n - d : n] = False
        self.end += delta
        self.starts = [s + delta for s in self.starts]

    def _ensure_columns(self, needed_end: int) -> None:
        """Make room for columns up to ``needed_end`` (reclaim free left columns, then grow)."""
        if needed_end <= self.capacity:
            return
        if self.starts and min(self.starts) > 0:
            free = min(self.starts)
            self._shift(-free)
            needed_end -= free
            if needed_end <= self.capacity:
                return
        if needed_end > self.max_columns:
            raise ValueError(f"KV cache: {needed_end} columns needed, at most {self.max_columns} allowed")
        columns = min(self.max_columns, max(needed_end, 2 * self.capacity))
        old_keys, old_values, old_valid = self.keys, self.values, self.valid
        self._allocate(columns)
        r, n = self.rows, self.end
        self.keys[:, :r, :, :n] = old_keys[:, :r, :, :n]
        self.values[:, :r, :, :n] = old_values[:, :r, :, :n]
        self.valid[:r, :n] = old_valid[:r, :n]

    def add_row(self, keys: torch.Tensor, values: torch.Tensor) -> int:
        """Append a sequence whose prompt keys/values are ``[layers, kv_heads, length, head_dim]``; return its
        row."""
        if self.rows >= self.max_rows:
            raise ValueError(f"KV cache: all {self.max_rows} rows are in use")
        length = keys.shape[2]
        if self.rows == 0:
            self.end = 0
            self.starts = []
        if length > self.end:  # the new prompt is longer than the timeline: move everyone right
            self._ensure_columns(length + 1)
            self._shift(length - self.end)
        row = self.rows
        start = self.end - length
        self.keys[:, row, :, start : self.end] = keys
        self.values[:, row, :, start : self.end] = values
        self.valid[row, :] = False
        self.valid[row, start : self.end] = True
        self.starts.append(start)
        self.rows += 1
        return row

    def next_column(self) -> int:
        """Reserve the column the next decode step writes (for every row)."""
        self._ensure_columns(self.end + 1)
        column = self.end
        self.valid[: self.rows, column] = True
        self.end += 1
        return column

    def remove_rows(self, rows: list[int]) -> list[int]:
        """Drop ``rows``; return, for every remaining row in order, its old index (rows are compacted)."""
        drop = set(rows)
        keep = [i for i in range(self.rows) if i not in drop]
        if len(keep) == self.rows:
            return keep
        if not keep:
            self.reset()
            return []
        index = torch.tensor(keep, dtype=torch.long)
        n = self.end
        self.keys[:, : len(keep), :, :n] = self.keys[:, index, :, :n]
        self.values[:, : len(keep), :, :n] = self.values[:, index, :, :n]
        self.valid[: len(keep), :n] = self.valid[index, :n]
        self.valid[len(keep) :, :] = False
        self.starts = [self.starts[i] for i in keep]
        self.rows = len(keep)
        return keep

    def memory_bytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()


class LlamaModel:
    """Weights plus the two passes the engine needs: prefill of one prompt, and one decode step of a batch."""

    def __init__(self, config: LlamaConfig, tensors: dict[str, torch.Tensor], *, dtype: torch.dtype) -> None:
        self.config = config
        self.dtype = dtype

        def get(name: str, dtype: torch.dtype = dtype) -> torch.Tensor:
            if name not in tensors:
                raise KeyError(f"weights file has no tensor '{name}'; delete the cache entry to rebuild it")
            return tensors[name].to(dtype)  # a no-op for float32: the tensor stays a view of the mmap'd file

        self.embed = get("embed")
        self.lm_head = self.embed if config.tie_word_embeddings else get("lm_head")
        self.final_norm = get("norm", torch.float32)
        self.layers = [
            _Layer(
                input_norm=get(f"layers.{i}.input_norm", torch.float32),
                qkv=get(f"layers.{i}.qkv"),
                o=get(f"layers.{i}.o"),
                post_norm=get(f"layers.{i}.post_norm", torch.float32),
                gate_up=get(f"layers.{i}.gate_up"),
                down=get(f"layers.{i}.down"),
            )
            for i in range(config.num_layers)
        ]
        half = config.head_dim // 2
        self.inv_freq = 1.0 / (
            config.rope_theta ** (torch.arange(0, half, dtype=torch.float32) * 2 / config.head_dim)
        )
        self.scale = 1.0 / math.sqrt(config.head_dim)

    @classmethod
    def load(cls, directory: Path, *, dtype: torch.dtype = torch.float32) -> LlamaModel:
        config = LlamaConfig.from_json(directory / "config.json")
        return cls(config, load_file(str(directory / "model.safetensors")), dtype=dtype)

    def new_cache(self, *, max_rows: int, max_columns: int) -> KVCache:
        return KVCache(self.config, max_rows=max_rows, max_columns=max_columns, dtype=self.dtype)

    # ------------------------------------------------------------------------------------ pieces
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps)
        return (weight * h).to(self.dtype)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def _split_qkv(self, h: torch.Tensor, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        qkv = F.linear(h, layer.qkv)
        q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        return q, k, v

    def _mlp(self, x: torch.Tensor, layer: _Layer) -> torch.Tensor:
        gate, up = F.linear(self._norm(x, layer.post_norm), layer.gate_up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, layer.down)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._norm(x, self.final_norm), self.lm_head).float()

    # ------------------------------------------------------------------------------------ passes
    @torch.inference_mode()
    def prefill(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run one prompt. Returns logits of its last position ``[vocab]`` and its keys/values
        ``[layers, kv_heads, length, head_dim]`` (ready for :meth:`KVCache.add_row`)."""
        c = self.config
        n = len(token_ids)
        ids = torch.tensor(token_ids, dtype=torch.long)
        cos, sin = self._rope(torch.arange(n))
        x = self.embed[ids]  # [n, hidden]
        keys = torch.empty((c.num_layers, c.num_kv_heads, n, c.head_dim), dtype=self.dtype)
        values = torch.empty_like(keys)
        for i, layer in enumerate(self.layers):
            q, k, v = self._split_qkv(self._norm(x, layer.input_norm), layer)
            q = self._rotate(q.view(n, c.num_heads, c.head_dim).transpose(0, 1), cos, sin)
            k = self._rotate(k.view(n, c.num_kv_heads, c.head_dim).transpose(0, 1), cos, sin)
            v = v.view(n, c.num_kv_heads, c.head_dim).transpose(0, 1)
            keys[i], values[i] = k, v
            attn = F.scaled_dot_product_attention(
                q[None], k[None], v[None], is_causal=True, scale=self.scale, enable_gqa=True
            )[0]
            x = x + F.linear(attn.transpose(0, 1).reshape(n, -1), layer.o)
            x = x + self._mlp(x, layer)
        return self._logits(x[-1]), keys, values

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One step for every row of ``cache``: feed ``tokens[row]`` at ``positions[row]``; return logits
        ``[rows, vocab]``. The new keys/values are written to the cache."""
        c = self.config
        rows = cache.rows
        groups = c.num_heads // c.num_kv_heads
        column = cache.next_column()
        end = cache.end
        cos, sin = self._rope(positions)
        cos, sin = cos[:, None, :], sin[:, None, :]
        # Additive mask: 0 where a row has a real entry, -inf at its left padding.
        bias = torch.zeros((rows, end), dtype=self.dtype).masked_fill_(
            ~cache.valid[:rows, :end], float("-inf")
        )
        bias = bias[:, None, None, :]
        x = self.embed[tokens]  # [rows, hidden]
        for i, layer in enumerate(self.layers):
            q, k, v = self._split_qkv(self._norm(x, layer.input_norm), layer)
            q = self._rotate(q.view(rows, c.num_heads, c.head_dim), cos, sin)
            k = self._rotate(k.view(rows, c.num_kv_heads, c.head_dim), cos, sin)
            cache.keys[i, :rows, :, column] = k
            cache.values[i, :rows, :, column] = v.view(rows, c.num_kv_heads, c.head_dim)
            layer_keys = cache.keys[i, :rows, :, :end]  # [rows, kv_heads, end, head_dim]
            layer_values = cache.values[i, :rows, :, :end]
            # Grouped-query attention without repeating the cache: [rows, kv_heads, groups, head_dim] queries.
            qg = q.view(rows, c.num_kv_heads, groups, c.head_dim)
            scores = torch.matmul(qg, layer_keys.transpose(-1, -2)) * self.scale + bias
            attn = torch.matmul(torch.softmax(scores.float(), dim=-1).to(self.dtype), layer_values)
            x = x + F.linear(attn.reshape(rows, -1), layer.o)
            x = x + self._mlp(x, layer)
        return self._logits(x)
