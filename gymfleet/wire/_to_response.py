"""Chat Completions answer -> Responses API ``Response`` (one pass over plain dicts)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from gymfleet.wire._convert_base import ConversionError, new_id

__all__ = ["chat_completion_to_response", "split_think"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TOKEN_ID_PREFIX = "token_id:"
# Responses params echoed on the Response object (besides the ones it always carries).
_ECHOED_PARAMS = (
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "reasoning",
    "text",
    "truncation",
    "user",
    "store",
    "service_tier",
    "top_logprobs",
    "background",
    "previous_response_id",
    "prompt",
)


def split_think(text: str) -> tuple[str | None, str]:
    """Split ``<think>...</think>`` reasoning out of model text.

    Handles several blocks, an unclosed ``<think>`` (generation cut off while reasoning) and a lone
    ``</think>`` whose opening tag was part of the prompt (templates that pre-fill ``<think>``).

    Args:
        text: The raw assistant text.

    Returns:
        ``(reasoning, rest)``: the reasoning text (blocks joined by a blank line) or ``None`` when there is
        none, and the remaining text with surrounding whitespace stripped when reasoning was removed.
    """
    if _THINK_OPEN not in text and _THINK_CLOSE not in text:
        return None, text
    parts: list[str] = []
    close = text.find(_THINK_CLOSE)
    first_open = text.find(_THINK_OPEN)
    if close != -1 and (first_open == -1 or close < first_open):
        # The opening tag was in the prompt: everything up to the first close tag is reasoning.
        parts.append(text[:close])
        text = text[close + len(_THINK_CLOSE) :]
    parts.extend(_THINK_BLOCK.findall(text))
    rest = _THINK_BLOCK.sub("", text)
    dangling = rest.find(_THINK_OPEN)
    if dangling != -1:
        parts.append(rest[dangling + len(_THINK_OPEN) :])
        rest = rest[:dangling]
    reasoning = "\n\n".join(p.strip() for p in parts if p.strip())
    return (reasoning or None), rest.strip()


def chat_completion_to_response(
    completion: dict[str, Any], params: dict[str, Any], *, uses_reasoning_parser: bool
) -> dict[str, Any]:
    """Translate one Chat Completions answer into a Responses API ``Response`` dict.

    Args:
        completion: The engine's chat completion (first choice is used).
        params: The Responses create params of the request, echoed on the answer.
        uses_reasoning_parser: Parse ``<think>...</think>`` out of the content into a reasoning item.
            A separate ``reasoning_content``/``reasoning`` field on the message is always used.

    Returns:
        A Response dict with ``reasoning``, ``message`` and ``function_call`` output items; token-id
        fields, when the completion carries them, are attached to the last output item.

    Raises:
        ConversionError: The completion has no choices or no message.
    """
    choices = completion.get("choices") or []
    if not choices or not isinstance(choices[0].get("message"), dict):
        raise ConversionError(
            "The chat completion from the engine has no choices[0].message; cannot build a Response. "
            "Check the engine's logs for the failed request.",
            where="choices[0].message",
        )
    choice = choices[0]
    message: dict[str, Any] = choice["message"]
    finish_reason = choice.get("finish_reason")
    incomplete = finish_reason in ("length", "content_filter")
    item_status = "incomplete" if incomplete else "completed"

    content = message.get("content") or ""
    if isinstance(content, list):  # some engines answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if uses_reasoning_parser:
        parsed, content = split_think(content)
        if parsed:
            reasoning = f"{reasoning}\n\n{parsed}" if reasoning else parsed

    output: list[dict[str, Any]] = []
    if reasoning:
        output.append(
            {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": reasoning}],
                "status": item_status,
            }
        )
    tool_calls = message.get("tool_calls") or []
    refusal = message.get("refusal")
    if content or refusal or not (output or tool_calls):
        parts: list[dict[str, Any]] = []
        if content or not refusal:
            parts.append({"type": "output_text", "text": content, "annotations": [], "logprobs": []})
        if refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        output.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": item_status,
                "content": parts,
            }
        )
    for call in tool_calls:
        function = call.get("function") or {}
        arguments = function.get("arguments", "")
        output.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name", ""),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                "status": "completed",
            }
        )

    token_data = _token_data(completion, choice, message)
    if token_data:
        output[-1].update(token_data)

    response: dict[str, Any] = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": float(completion.get("created") or int(time.time())),
        "model": completion.get("model") or params.get("model") or "",
        "output": output,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": (
            {"reason": "max_output_tokens" if finish_reason == "length" else "content_filter"}
            if incomplete
            else None
        ),
        "error": None,
        "usage": _usage_to_responses(completion.get("usage")),
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    for key in _ECHOED_PARAMS:
        if key in params:
            response[key] = params[key]
    return response


def _usage_to_responses(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    input_tokens = usage.get("prompt_tokens") or 0
    output_tokens = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or input_tokens + output_tokens,
    }


def _token_data(
    completion: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]
) -> dict[str, Any]:
    """Token ids and log probs of the turn, from the best source present; ``{}`` when there is none."""
    prompt_ids = message.get("prompt_token_ids")
    if prompt_ids is None:
        prompt_ids = choice.get("prompt_token_ids", completion.get("prompt_token_ids"))
    generation_ids = message.get("generation_token_ids")
    if generation_ids is None:
        generation_ids = choice.get("token_ids", message.get("token_ids"))
    log_probs = message.get("generation_log_probs")

    logprob_entries = (choice.get("logprobs") or {}).get("content") or []
    if logprob_entries and (generation_ids is None or log_probs is None):
        parsed_ids: list[int] = []
        parsed_probs: list[float] = []
        for entry in logprob_entries:
            token = entry.get("token", "")
            if token.startswith(_TOKEN_ID_PREFIX):
                parsed_ids.append(int(token[len(_TOKEN_ID_PREFIX) :]))
            parsed_probs.append(float(entry.get("logprob", 0.0)))
        if generation_ids is None and len(parsed_ids) == len(logprob_entries):
            generation_ids = parsed_ids
        if log_probs is None:
            log_probs = parsed_probs

    data: dict[str, Any] = {}
    if prompt_ids is not None:
        data["prompt_token_ids"] = prompt_ids
    if generation_ids is not None:
        data["generation_token_ids"] = generation_ids
    if log_probs is not None and (generation_ids is not None or prompt_ids is not None):
        data["generation_log_probs"] = log_probs
    return data
