"""scripted_model: a deterministic, scripted stand-in for an LLM, for tests and benchmarks. NOT a language model.

Behaviour, per turn:
* if the last input item is a tool result (``function_call_output``), answer with a message that quotes it;
* else, if tools are offered, call the first tool, filling string arguments from the last user message (the word
  after " in ", else its last word: "what's it like in sf?" -> {"city": "sf"});
* else, answer with a message echoing the last user message.

Knobs: ``latency_ms`` (sleep per call), ``fail_every_n`` / ``fail_status`` (every n-th call answers that HTTP status,
for fault tests), ``return_token_id_information`` (byte-level fake token ids and zero logprobs, in the same fields as
vllm_model, so training code paths can be exercised without a model).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from typing import Any

import orjson
from fastapi.responses import Response as HTTPResponse

from gymfleet.server import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel
from gymfleet.wire import ChatCompletionCreateParams, ResponseCreateParams


class ScriptedModelConfig(BaseResponsesAPIModelConfig):
    model: str = "scripted"
    latency_ms: float = 0.0
    fail_every_n: int = 0
    fail_status: int = 500
    return_token_id_information: bool = False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _argument_value(text: str) -> str:
    match = re.search(r"\bin\s+([A-Za-z][\w\-]*)", text)
    if match:
        return match.group(1)
    words = re.findall(r"[A-Za-z][\w\-]*", text)
    return words[-1] if words else "nowhere"


def _arguments(tool: dict[str, Any], user_text: str) -> dict[str, Any]:
    params = tool.get("parameters")
    params = params if isinstance(params, dict) else {}
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = params.get("required")
    required = [n for n in (required if isinstance(required, list) else list(props)) if isinstance(n, str)]
    args: dict[str, Any] = {}
    for name in required:
        prop = props.get(name)
        kind = prop.get("type", "string") if isinstance(prop, dict) else "string"
        args[name] = (
            0 if kind in ("integer", "number") else (False if kind == "boolean" else _argument_value(user_text))
        )
    return args


def _fake_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))[:4096]


class ScriptedModel(SimpleResponsesAPIModel):
    config: ScriptedModelConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._calls = itertools.count(1)

    async def _pace(self) -> HTTPResponse | None:
        n = next(self._calls)
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if self.config.fail_every_n and n % self.config.fail_every_n == 0:
            body = {"error": {"type": "injected", "message": f"scripted failure on call {n}"}}
            return HTTPResponse(orjson.dumps(body), status_code=self.config.fail_status, media_type="application/json")
        return None

    def _decide(self, items: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[str, Any]:
        last = items[-1] if items else {}
        if last.get("type") == "function_call_output" or last.get("role") == "tool":
            return "message", f"Here is what I found: {last.get('output', last.get('content', ''))}"
        user_text = next((_text_of(i.get("content")) for i in reversed(items) if i.get("role") == "user"), "")
        offered = [t for t in tools or [] if isinstance(t, dict)]  # the body is the client's: expect anything
        if offered:
            tool = offered[0].get("function", offered[0])  # chat tools nest the definition under "function"
            tool = tool if isinstance(tool, dict) else {}
            return "call", (str(tool.get("name", "tool")), _arguments(tool, user_text))
        return "message", f"You said: {user_text}"

    async def responses(self, body: ResponseCreateParams) -> Any:
        failure = await self._pace()
        if failure is not None:
            return failure
        items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
        kind, value = self._decide(items, body.tools)
        if kind == "call":
            name, args = value
            item: dict[str, Any] = {
                "type": "function_call", "id": f"fc_{uuid.uuid4().hex[:16]}",
                "call_id": f"call_{uuid.uuid4().hex[:16]}",
                "name": name, "arguments": orjson.dumps(args).decode(), "status": "completed",
            }
            text = item["arguments"]
        else:
            text = value
            item = {
                "type": "message", "id": f"msg_{uuid.uuid4().hex[:16]}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        prompt_text = orjson.dumps(items).decode()
        if self.config.return_token_id_information:
            gen = _fake_ids(text)
            item.update(prompt_token_ids=_fake_ids(prompt_text), generation_token_ids=gen,
                        generation_log_probs=[0.0] * len(gen))
        in_tok, out_tok = len(prompt_text) // 4 + 1, len(text) // 4 + 1
        return {
            "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "model": self.config.model, "status": "completed", "output": [item],
            "tools": body.tools, "tool_choice": body.tool_choice, "parallel_tool_calls": body.parallel_tool_calls,
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        }

    async def chat_completions(self, body: ChatCompletionCreateParams) -> Any:
        failure = await self._pace()
        if failure is not None:
            return failure
        tools = getattr(body, "tools", None)  # an extra field: absent unless the client sent it
        kind, value = self._decide(body.messages, tools if isinstance(tools, list) else [])
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if kind == "call":
            name, args = value
            message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
                                      "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]
            finish = "tool_calls"
        else:
            message["content"] = value
            finish = "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.config.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


if __name__ == "__main__":
    ScriptedModel.run_webserver()
