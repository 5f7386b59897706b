"""arithmetic: short arithmetic and string questions, verified exactly; no tools, one answer message.

Reward 1.0 when the final assistant message's answer (see :mod:`tasks` for the one extraction rule) equals the
row's ``expected_answer``, else 0.0. The verify response also carries ``extracted_answer`` so a reader can see
what was scored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer
from gymfleet.wire import BaseVerifyRequest, BaseVerifyResponse

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tasks.py sits next to this file (run as a script)
from tasks import FAMILIES, check_answer, extract_answer  # noqa: E402


class ArithmeticConfig(BaseResourcesServerConfig):
    pass


def final_message_text(output: list[dict[str, Any]]) -> str | None:
    """Text of the last assistant message of a Response's output, or None when the model wrote no message."""
    for item in reversed(output):
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return None


class ArithmeticServer(SimpleResourcesServer):
    config: ArithmeticConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        extra = body.model_extra or {}
        family = str(extra.get("task", ""))
        expected = extra.get("expected_answer")
        if family not in FAMILIES or not isinstance(expected, str):
            raise HTTPException(
                422,
                (
                    f"arithmetic /verify needs 'task' (one of {', '.join(FAMILIES)}) and a string "
                    f"'expected_answer' in the dataset row; got task={family!r}, expected_answer={expected!r}"
                ),
            )
        text = final_message_text(body.response.output)
        answer = extract_answer(family, text) if text is not None else None
        correct = text is not None and check_answer(family, text, expected)
        return BaseVerifyResponse(
            **body.model_dump(), reward=1.0 if correct else 0.0, extracted_answer=answer
        )


if __name__ == "__main__":
    ArithmeticServer.run_webserver()
