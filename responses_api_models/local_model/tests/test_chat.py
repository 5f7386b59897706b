"""The chat template and the tool-call parser (pure functions, no model)."""

from __future__ import annotations

import json

import pytest

from responses_api_models.local_model.tests.conftest import skip_without_extra

skip_without_extra()

from gymfleet.local_model import ChatFormatError, parse_reply, render_chat  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def text_of(pieces) -> str:
    return "".join(p if isinstance(p, str) else f"<ids {p}>" for p in pieces)


def test_plain_conversation_uses_chatml_and_the_default_system_prompt() -> None:
    pieces = render_chat([{"role": "user", "content": "hi"}], default_system="SYS")
    assert (
        text_of(pieces)
        == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tools_are_described_and_history_is_rendered_back() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "weather in Oslo?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
    ]
    text = text_of(render_chat(messages, [WEATHER]))
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou may call")
    assert '"name": "get_weather"' in text.split("</tools>")[0]
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        "</tool_call><|im_end|>" in text
    )
    assert "<|im_start|>tool\n<tool_response>\ncold\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_generation_token_ids_are_spliced_exactly() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "generation_token_ids": [11, 12, 2], "prompt_token_ids": [1]},
        {"role": "user", "content": "again"},
    ]
    pieces = render_chat(messages, eos_token_id=2)
    index = pieces.index([11, 12, 2])
    assert pieces[index - 1] == "<|im_start|>assistant\n" and pieces[index + 1] == "\n"
    unfinished = render_chat([messages[0], {**messages[1], "generation_token_ids": [11, 12]}], eos_token_id=2)
    assert unfinished[unfinished.index([11, 12]) + 1] == "<|im_end|>\n"


@pytest.mark.parametrize(
    "message, where",
    [
        ({"role": "wizard", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}, "messages[0].content[0]"),
    ],
)
def test_unrenderable_messages_name_the_spot(message, where) -> None:
    with pytest.raises(ChatFormatError) as info:
        render_chat([message])
    assert info.value.where == where


def test_tagged_calls_become_tool_calls_and_the_rest_stays_text() -> None:
    reply = parse_reply(
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        ["get_weather"],
    )
    assert reply.content == "Let me check."
    [call] = reply.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_list_form_bare_json_and_string_arguments_are_accepted() -> None:
    listed = parse_reply(
        '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\\"x\\": 1}"}]</tool_call>',
        ["a", "b"],
    )
    assert [c["function"]["name"] for c in listed.tool_calls] == ["a", "b"]
    assert json.loads(listed.tool_calls[1]["function"]["arguments"]) == {"x": 1}
    bare = parse_reply('{"name": "a", "arguments": {"k": "v"}}', ["a"])
    assert bare.content is None and len(bare.tool_calls) == 1


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # broken JSON
        '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',  # unknown tool
        '<tool_call>{"name": "get_weather", "arguments": [1, 2]}</tool_call>',  # arguments not an object
        "<tool_call>\n<tool_name>get_weather</tool_name>",  # unclosed, not JSON
        "The weather is nice.",
    ],
)
def test_malformed_calls_stay_plain_text(text) -> None:
    reply = parse_reply(text, ["get_weather"])
    assert reply.tool_calls == [] and reply.content == text


def test_no_tools_offered_means_no_parsing() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    assert parse_reply(text, []).content == text
