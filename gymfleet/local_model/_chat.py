"""The chat template (ChatML, SmolLM2's format) with tools, and the parser of the tool calls a model writes.

Prompt: offered tools are described in the system turn, with the call format the model is asked to use::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Assistant turns that called tools are rendered back in that same format; tool results are a ``tool`` turn
wrapped in ``<tool_response>``. An assistant turn that carries ``generation_token_ids`` (a previous answer of
this server fed back by an agent) is spliced in as those exact tokens, so a multi-turn prompt holds the tokens
the model really sampled, which is what RL training needs.

Parsing: ``<tool_call>`` blocks holding a JSON object (or a list of them) with a known tool ``name`` and an
``arguments`` object become tool calls; a reply that is only such a JSON object is accepted too (small models
often drop the tags). Anything malformed leaves the whole reply as plain text: a bad call is the model's
mistake to be scored, never a server error.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "IM_END",
    "IM_START",
    "ChatFormatError",
    "ParsedReply",
    "parse_reply",
    "render_chat",
    "tool_names",
]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_TOOLS_PREAMBLE = (
    "\n\nYou may call one or more of these tools to help with the user's request:\n"
    "<tools>\n{tools}\n</tools>\n"
    "To call a tool, reply with only a JSON object inside <tool_call></tool_call> tags, like this:\n"
    '<tool_call>\n{{"name": "<tool name>", "arguments": {{<arguments as a JSON object>}}}}\n</tool_call>\n'
    "When you have the information you need, answer the user in plain text."
)
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)

Piece = str | list[int]


class ChatFormatError(ValueError):
    """A message or tool that cannot be rendered (the server answers 400 and names ``where``)."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


@dataclass
class ParsedReply:
    content: str | None
    tool_calls: list[dict[str, Any]]


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
                parts.append(part["refusal"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ChatFormatError(
                    f"content part of type {kind!r} is not supported by this text-only model; "
                    "send text parts",
                    where=f"{where}[{i}]",
                )
        return "".join(parts)
    raise ChatFormatError(
        f"content must be a string or a list of parts, got {type(content).__name__}", where=where
    )


def _tool_function(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ChatFormatError("a tool must be an object", where=where)
    function = tool.get("function") if tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ChatFormatError(
            "only function tools are supported: "
            "{'type': 'function', 'function': {'name': ..., 'parameters': ...}}",
            where=where,
        )
    return {k: function[k] for k in ("name", "description", "parameters") if function.get(k) is not None}


def tool_names(tools: Sequence[dict[str, Any]] | None) -> list[str]:
    return [_tool_function(t, f"tools[{i}]")["name"] for i, t in enumerate(tools or [])]


def _call_json(call: Any, where: str) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise ChatFormatError("a tool call needs a 'function' object", where=where)
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            pass  # keep the model's original text: it is what it wrote
    return json.dumps({"name": function.get("name", ""), "arguments": arguments}, ensure_ascii=False)


def render_chat(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    default_system: str = DEFAULT_SYSTEM_PROMPT,
    eos_token_id: int | None = None,
) -> list[Piece]:
    """Render a Chat Completions conversation as prompt pieces: text, or exact token ids of earlier answers.

    Args:
        messages: Chat messages (``system``/``developer``, ``user``, ``assistant`` with optional
        ``tool_calls``,
            ``tool``).
        tools: Chat Completions tools (``{"type": "function", "function": {...}}``), described in the system
        turn. default_system: System text used when the conversation has no system message. eos_token_id: The
        ``<|im_end|>`` id, to know whether spliced generation ids already end the turn.

    Returns:
        Pieces to tokenize and concatenate; the last piece opens the assistant turn.

    Raises:
        ChatFormatError: A message or tool that cannot be rendered (names its position).
    """
    functions = [_tool_function(t, f"tools[{i}]") for i, t in enumerate(tools or [])]
    pieces: list[Piece] = []
    system_parts: list[str] = []
    rest = list(messages)
    while rest and rest[0].get("role") in ("system", "developer"):
        system_parts.append(_text(rest.pop(0).get("content"), f"messages[{len(system_parts)}].content"))
    system = "\n\n".join(p for p in system_parts if p) if system_parts else default_system
    if functions:
        system += _TOOLS_PREAMBLE.format(
            tools="\n".join(json.dumps(f, ensure_ascii=False) for f in functions)
        )
    pieces.append(f"{IM_START}system\n{system}{IM_END}\n")
    offset = len(system_parts)
    for index, message in enumerate(rest, start=offset):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ChatFormatError("a message must be an object", where=where)
        role = message.get("role")
        if role in ("system", "developer", "user"):
            pieces.append(
                f"{IM_START}{'user' if role == 'user' else 'system'}\n"
                f"{_text(message.get('content'), where + '.content')}{IM_END}\n"
            )
        elif role == "assistant":
            pieces.extend(_assistant_pieces(message, where, eos_token_id))
        elif role == "tool":
            body = _text(message.get("content"), where + ".content")
            pieces.append(f"{IM_START}tool\n<tool_response>\n{body}\n</tool_response>{IM_END}\n")
        else:
            raise ChatFormatError(
                f"unknown role {role!r}; use system, developer, user, assistant or tool",
                where=where + ".role",
            )
    pieces.append(f"{IM_START}assistant\n")
    return pieces


def _assistant_pieces(message: dict[str, Any], where: str, eos_token_id: int | None) -> list[Piece]:
    generated = message.get("generation_token_ids")
    if isinstance(generated, list) and generated and all(isinstance(t, int) for t in generated):
        tail = "\n" if eos_token_id is not None and generated[-1] == eos_token_id else f"{IM_END}\n"
        return [f"{IM_START}assistant\n", list(generated), tail]
    text = _text(message.get("content"), where + ".content")
    calls = message.get("tool_calls") or []
    blocks = [
        f"<tool_call>\n{_call_json(c, f'{where}.tool_calls[{i}]')}\n</tool_call>" for i, c in enumerate(calls)
    ]
    body = "\n".join(([text] if text else []) + blocks)
    return [f"{IM_START}assistant\n{body}{IM_END}\n"]


def parse_reply(text: str, tool_names: Sequence[str]) -> ParsedReply:
    """Split a model reply into text and tool calls (Chat Completions ``tool_calls`` dicts).

    With no tools offered, or any malformed call, the whole reply is plain text.
    """
    if not tool_names:
        return ParsedReply(content=text, tool_calls=[])
    known = set(tool_names)
    blocks = _TOOL_CALL_BLOCK.findall(text)
    if blocks:
        calls: list[dict[str, Any]] = []
        for block in blocks:
            parsed = _calls_from_json(block, known)
            if parsed is None:
                return ParsedReply(content=text, tool_calls=[])
            calls.extend(parsed)
        if not calls:
            return ParsedReply(content=text, tool_calls=[])
        rest = _TOOL_CALL_BLOCK.sub("", text).strip()
        return ParsedReply(content=rest or None, tool_calls=calls)
    bare = _calls_from_json(text, known)
    if bare:
        return ParsedReply(content=None, tool_calls=bare)
    return ParsedReply(content=text, tool_calls=[])


def _calls_from_json(raw: str, known: set[str]) -> list[dict[str, Any]] | None:
    try:
        value = json.loads(raw.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    items = value if isinstance(value, list) else [value]
    calls: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in known:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": item["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
            }
        )
    return calls
