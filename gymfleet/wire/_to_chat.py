"""Responses API create params -> Chat Completions create params (one pass over plain dicts)."""

from __future__ import annotations

import json
from typing import Any

from gymfleet.wire._convert_base import TOKEN_ID_FIELDS, ConversionError

__all__ = ["responses_to_chat_params"]

# Responses params that have no Chat Completions counterpart for an engine; they are dropped.
_DROPPED_PARAMS = frozenset(
    {
        "input",
        "instructions",
        "stream",
        "store",
        "service_tier",
        "include",
        "truncation",
        "background",
        "prompt",
        "max_tool_calls",
        "previous_response_id",
    }
)


def responses_to_chat_params(
    params: dict[str, Any], *, replace_developer_role_with_system: bool = False
) -> dict[str, Any]:
    """Translate Responses API create params into Chat Completions create params.

    Args:
        params: A Responses ``POST /v1/responses`` body as a dict (defaults may be present or absent).
        replace_developer_role_with_system: Send ``developer`` messages as ``system`` (for chat templates
            that do not know the developer role). Leading system/developer messages are always folded
            with ``instructions`` into one ``system`` message.

    Returns:
        A Chat Completions body. Keys with no engine counterpart (``store``, ``include``, ...) are dropped.

    Raises:
        ConversionError: An input item, content part, tool or option that has no Chat equivalent.
    """
    if params.get("previous_response_id"):
        raise ConversionError(
            "previous_response_id is not supported: this model server keeps no conversation state. "
            "Send the whole conversation in 'input' instead.",
            where="previous_response_id",
        )
    messages = _input_to_messages(
        params.get("input", []), params.get("instructions"), replace_developer_role_with_system
    )
    chat: dict[str, Any] = {"messages": messages}
    for key, value in params.items():
        if key in _DROPPED_PARAMS or value is None:
            continue
        if key == "max_output_tokens":
            chat["max_tokens"] = value
        elif key == "reasoning":
            if value.get("effort") is not None:
                chat["reasoning_effort"] = value["effort"]
        elif key == "text":
            fmt = _text_format_to_response_format(value)
            if fmt is not None:
                chat["response_format"] = fmt
        elif key == "top_logprobs":
            chat["logprobs"] = True
            chat["top_logprobs"] = value
        elif key == "tools":
            if value:
                chat["tools"] = [_tool_to_chat(t, i) for i, t in enumerate(value)]
        elif key == "tool_choice":
            chat["tool_choice"] = _tool_choice_to_chat(value)
        else:
            chat[key] = value
    if "tools" not in chat:
        if chat.get("tool_choice") == "required":
            raise ConversionError(
                "tool_choice='required' needs at least one tool, but 'tools' is empty. "
                "Add tools or use tool_choice='auto'.",
                where="tool_choice",
            )
        chat.pop("tool_choice", None)
        chat.pop("parallel_tool_calls", None)
    return chat


def _input_to_messages(
    input_: str | list[dict[str, Any]], instructions: str | None, developer_as_system: bool
) -> list[dict[str, Any]]:
    if isinstance(input_, str):
        head = [{"role": "system", "content": instructions}] if instructions else []
        return [*head, {"role": "user", "content": input_}]

    system_texts: list[str] = [instructions] if instructions else []
    start = 0
    # Leading system/developer messages fold into one system message together with the instructions.
    for start, item in enumerate(input_):  # noqa: B007 - `start` is read after the loop
        if _item_type(item, start) != "message" or item.get("role") not in ("system", "developer"):
            break
        system_texts.append(_content_to_text(item.get("content"), f"input[{start}].content"))
    else:
        start = len(input_)
    messages: list[dict[str, Any]] = []
    if system_texts:
        messages.append({"role": "system", "content": "\n\n".join(system_texts)})

    pending: dict[str, Any] | None = None  # the assistant message being assembled from items

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            messages.append(pending)
            pending = None

    for index in range(start, len(input_)):
        item = input_[index]
        kind = _item_type(item, index)
        where = f"input[{index}]"
        if kind == "message" and item.get("role") == "assistant":
            if pending is not None and ("content" in pending or "tool_calls" in pending):
                flush()
            pending = pending or {"role": "assistant"}
            text, refusal = _assistant_content(item.get("content"), f"{where}.content")
            pending["content"] = text
            if refusal:
                pending["refusal"] = refusal
            _copy_token_ids(item, pending)
        elif kind == "reasoning":
            if pending is not None and ("content" in pending or "tool_calls" in pending):
                flush()
            pending = pending or {"role": "assistant"}
            text = _reasoning_text(item)
            if text:
                previous = pending.get("reasoning_content")
                pending["reasoning_content"] = f"{previous}\n\n{text}" if previous else text
            _copy_token_ids(item, pending)
        elif kind == "function_call":
            pending = pending or {"role": "assistant"}
            pending.setdefault("tool_calls", []).append(_function_call_to_tool_call(item, where))
            _copy_token_ids(item, pending)
        elif kind == "function_call_output":
            flush()
            messages.append(_function_output_to_tool_message(item, where))
        elif kind == "message":
            flush()
            messages.append(_message_to_chat(item, where, developer_as_system))
        else:
            raise ConversionError(
                f"Input item {where} has type {kind!r}, which cannot be sent to a Chat Completions engine. "
                "Supported types: message, reasoning, function_call, function_call_output.",
                where=f"{where}.type",
            )
    flush()
    for message in messages:
        # Chat templates expect a content key on assistant turns, even tool-call-only ones.
        if message["role"] == "assistant":
            message.setdefault("content", "" if "tool_calls" not in message else None)
    return messages


def _item_type(item: Any, index: int) -> str:
    if not isinstance(item, dict):
        raise ConversionError(
            f"Input item input[{index}] is a {type(item).__name__}; "
            "expected an object with 'type' or 'role'.",
            where=f"input[{index}]",
        )
    kind = item.get("type")
    if kind is None:
        if "role" in item:
            return "message"
        raise ConversionError(
            f"Input item input[{index}] has neither 'type' nor 'role'; add type='message' and a role.",
            where=f"input[{index}]",
        )
    return str(kind)


def _copy_token_ids(item: dict[str, Any], message: dict[str, Any]) -> None:
    for key in TOKEN_ID_FIELDS:
        value = item.get(key)
        if value is not None:
            message[key] = value


def _text_parts(content: Any, where: str) -> list[dict[str, Any]] | str:
    """Chat content for a user/system/developer message: a string, or a list of chat content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            image: dict[str, Any] = {"url": part.get("image_url") or part.get("file_id")}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio", part)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise ConversionError(
                f"Content part {where}[{i}] has type {kind!r}, which has no Chat Completions equivalent. "
                "Use input_text, input_image or input_audio.",
                where=f"{where}[{i}].type",
            )
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _content_to_text(content: Any, where: str) -> str:
    converted = _text_parts(content, where)
    if isinstance(converted, str):
        return converted
    if any(p["type"] != "text" for p in converted):
        raise ConversionError(
            f"{where} of a system/developer message holds non-text parts; only text can go there.",
            where=where,
        )
    return "".join(str(p["text"]) for p in converted)


def _assistant_content(content: Any, where: str) -> tuple[str, str | None]:
    if content is None or isinstance(content, str):
        return content or "", None
    texts: list[str] = []
    refusals: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text", "text"):
            texts.append(part.get("text", ""))
        elif kind == "refusal":
            refusals.append(part.get("refusal", ""))
        else:
            raise ConversionError(
                f"Content part {where}[{i}] of an assistant message has type {kind!r}; "
                "expected output_text or refusal.",
                where=f"{where}[{i}].type",
            )
    return "".join(texts), ("".join(refusals) or None)


def _reasoning_text(item: dict[str, Any]) -> str:
    # Prefer the full reasoning text; fall back to the summary (what most engines give us).
    texts = [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
    if not any(texts):
        texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
    return "\n\n".join(t for t in texts if t)


def _message_to_chat(item: dict[str, Any], where: str, developer_as_system: bool) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer"):
        raise ConversionError(
            f"Message {where} has role {role!r}; expected user, assistant, system or developer.",
            where=f"{where}.role",
        )
    if role == "developer" and developer_as_system:
        role = "system"
    return {"role": role, "content": _text_parts(item.get("content"), f"{where}.content")}


def _function_call_to_tool_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id") or item.get("id")
    name = item.get("name")
    if not call_id or not name:
        raise ConversionError(
            f"function_call {where} needs 'call_id' and 'name'; got call_id={call_id!r}, name={name!r}.",
            where=where,
        )
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _function_output_to_tool_message(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not call_id:
        raise ConversionError(f"function_call_output {where} needs a 'call_id'.", where=f"{where}.call_id")
    output = item.get("output", "")
    if not isinstance(output, str):
        if isinstance(output, list):
            output = _content_to_text(output, f"{where}.output")
        else:
            output = json.dumps(output)
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tool_to_chat(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        raise ConversionError(
            f"tools[{index}] has type {tool.get('type')!r}; a Chat Completions engine only takes function "
            "tools. Remove it or use a model server that speaks the Responses API natively.",
            where=f"tools[{index}].type",
        )
    if "function" in tool:  # already in chat shape
        return {"type": "function", "function": tool["function"]}
    function: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    return {"type": "function", "function": function}


def _tool_choice_to_chat(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _text_format_to_response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type")}
