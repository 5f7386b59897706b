"""Pieces shared by both conversion directions: the error type, id minting, token-id field names."""

from __future__ import annotations

import uuid

from gymfleet.errors import GymFleetError

__all__ = ["TOKEN_ID_FIELDS", "ConversionError", "new_id"]

TOKEN_ID_FIELDS: tuple[str, ...] = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
"""Fields that carry exact tokens of a turn, on output items and on assistant chat messages."""


class ConversionError(GymFleetError, ValueError):
    """A request or answer that cannot be translated between the Responses and Chat Completions APIs.

    ``where`` names the offending spot, e.g. ``input[3].type``.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


def new_id(prefix: str) -> str:
    """Return a fresh OpenAI-style id such as ``msg_3f2a...`` (prefix, underscore, 32 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex}"
