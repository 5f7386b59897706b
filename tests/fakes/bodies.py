"""Request bodies the server tests send more than once."""

from __future__ import annotations

from typing import Any

__all__ = ["answer_body"]


def answer_body(answer_text: str, expected: str) -> dict[str, Any]:
    """A ``/verify`` body whose response is one assistant message ``answer_text``, checked against ``expected``."""
    return {
        "responses_create_params": {"input": "q"},
        "response": {
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": answer_text}],
                }
            ]
        },
        "expected_answer": expected,
    }
