"""Responses <-> Chat Completions conversion."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gymfleet.errors import GymFleetError
from gymfleet.wire import (
    ConversionError,
    Response,
    ResponseCreateParams,
    chat_completion_to_response,
    responses_to_chat_params,
    split_think,
)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def _completion(message: dict[str, Any], finish_reason: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        **extra,
    }


# ------------------------------------------------------------------------------------ Responses -> Chat
def test_string_input_becomes_user_message() -> None:
    chat = responses_to_chat_params({"input": "hi", "model": "m"})
    assert chat == {"messages": [{"role": "user", "content": "hi"}], "model": "m"}


def test_string_input_with_instructions() -> None:
    chat = responses_to_chat_params({"input": "hi", "instructions": "be brief"})
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_instructions_and_leading_system_developer_fold_into_one_system_message() -> None:
    chat = responses_to_chat_params(
        {
            "instructions": "A",
            "input": [
                {"role": "developer", "content": "B"},
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "C"}]},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": "later"},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "A\n\nB\n\nC"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": "later"},
    ]


def test_replace_developer_role_with_system() -> None:
    params = {"input": [{"role": "user", "content": "x"}, {"role": "developer", "content": "d"}]}
    chat = responses_to_chat_params(params, replace_developer_role_with_system=True)
    assert chat["messages"][1] == {"role": "system", "content": "d"}


def test_user_content_parts() -> None:
    chat = responses_to_chat_params(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                    ],
                }
            ]
        }
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
    ]


def test_full_tool_round_trip_history() -> None:
    params = {
        "input": [
            {"role": "user", "content": "weather in sf?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "need tool"}]},
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "sf"}',
                "prompt_token_ids": [1, 2],
                "generation_token_ids": [3, 4],
                "generation_log_probs": [-0.1, -0.2],
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"w": "cold"}'},
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "answer"}]},
            {
                "type": "message",
                "id": "msg_2",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "It is cold.", "annotations": []}],
                "generation_token_ids": [9],
            },
            {"role": "user", "content": "thanks"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    chat = responses_to_chat_params(params)
    assert chat["messages"] == [
        {"role": "user", "content": "weather in sf?"},
        {
            "role": "assistant",
            "reasoning_content": "need tool",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "sf"}'},
                }
            ],
            "prompt_token_ids": [1, 2],
            "generation_token_ids": [3, 4],
            "generation_log_probs": [-0.1, -0.2],
            "content": None,
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"w": "cold"}'},
        {
            "role": "assistant",
            "reasoning_content": "answer",
            "content": "It is cold.",
            "generation_token_ids": [9],
        },
        {"role": "user", "content": "thanks"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER_TOOL["parameters"],
            },
        }
    ]
    assert chat["tool_choice"] == "auto"
    assert chat["parallel_tool_calls"] is False


def test_consecutive_assistant_messages_stay_separate_turns() -> None:
    chat = responses_to_chat_params(
        {"input": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}
    )
    assert chat["messages"] == [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_parallel_function_calls_share_one_assistant_message() -> None:
    calls = [{"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"} for i in range(3)]
    chat = responses_to_chat_params({"input": [{"role": "user", "content": "go"}, *calls]})
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == ["c0", "c1", "c2"]


def test_params_mapping() -> None:
    chat = responses_to_chat_params(
        {
            "input": "x",
            "max_output_tokens": 64,
            "reasoning": {"effort": "low", "summary": "auto"},
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 3,
            "top_logprobs": 2,
            "store": True,
            "truncation": "disabled",
            "metadata": {"k": "v"},
            "text": {
                "format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}
            },
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "tools": [],
            "stream": None,
        }
    )
    assert chat == {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 64,
        "reasoning_effort": "low",
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "logprobs": True,
        "top_logprobs": 2,
        "metadata": {"k": "v"},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_defaulted_pydantic_params_convert() -> None:
    params = ResponseCreateParams(input="x", tools=[WEATHER_TOOL]).model_dump()
    chat = responses_to_chat_params(params)
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True
    assert "stream" not in chat and "include" not in chat


def test_named_tool_choice() -> None:
    chat = responses_to_chat_params(
        {"input": "x", "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "get_weather"}}
    )
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_required_tool_choice_without_tools_is_an_error() -> None:
    with pytest.raises(ConversionError, match="tool_choice='required'"):
        responses_to_chat_params({"input": "x", "tool_choice": "required"})


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"content": "no role"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": ["not a dict"]}, "input[0]"),
    ],
)
def test_unsupported_input_gives_typed_error(params: dict[str, Any], where: str) -> None:
    with pytest.raises(ConversionError) as info:
        responses_to_chat_params(params)
    assert info.value.where == where
    assert isinstance(info.value, GymFleetError) and isinstance(info.value, ValueError)


def test_non_string_arguments_and_outputs_are_serialized() -> None:
    chat = responses_to_chat_params(
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}},
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_text", "text": "ok"}],
                },
            ]
        }
    )
    assert chat["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert chat["messages"][1]["content"] == "ok"


def test_input_is_not_mutated() -> None:
    item = {
        "type": "function_call",
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
        "generation_token_ids": [1],
    }
    params = {"input": [item], "tools": [WEATHER_TOOL]}
    responses_to_chat_params(params)
    assert item == {
        "type": "function_call",
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
        "generation_token_ids": [1],
    }
    assert params["tools"] == [WEATHER_TOOL]


# ------------------------------------------------------------------------------------ Chat -> Responses
def test_text_answer() -> None:
    params = {"input": "hi", "model": "m", "tools": [], "temperature": 0.1}
    response = chat_completion_to_response(
        _completion({"content": "hello"}), params, uses_reasoning_parser=False
    )
    assert re.fullmatch(r"resp_[0-9a-f]{32}", response["id"])
    assert response["status"] == "completed" and response["incomplete_details"] is None
    assert response["temperature"] == 0.1 and response["model"] == "m"
    assert "input" not in response
    [message] = response["output"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", message["id"])
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_text" and message["content"][0]["text"] == "hello"
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    Response.model_validate(response)


def test_think_tags_become_reasoning_item() -> None:
    completion = _completion({"content": "<think>let me see</think>\n\nThe answer is 4."})
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=True)
    reasoning, message = response["output"]
    assert re.fullmatch(r"rs_[0-9a-f]{32}", reasoning["id"])
    assert reasoning["summary"] == [{"type": "summary_text", "text": "let me see"}]
    assert message["content"][0]["text"] == "The answer is 4."


def test_think_tags_kept_as_text_without_reasoning_parser() -> None:
    completion = _completion({"content": "<think>a</think>b"})
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)
    assert [i["type"] for i in response["output"]] == ["message"]
    assert response["output"][0]["content"][0]["text"] == "<think>a</think>b"


def test_reasoning_content_field_is_used() -> None:
    completion = _completion({"content": "4", "reasoning_content": "2+2"})
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)
    assert response["output"][0]["summary"][0]["text"] == "2+2"


def test_tool_calls_become_function_calls_and_token_ids_go_on_last_item() -> None:
    completion = _completion(
        {
            "content": "<think>use tool</think>",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"sf"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"la"}'},
                },
            ],
        },
        finish_reason="tool_calls",
        prompt_token_ids=[1, 2, 3],
    )
    completion["choices"][0]["token_ids"] = [7, 8]
    completion["choices"][0]["logprobs"] = {
        "content": [{"token": "token_id:7", "logprob": -0.5}, {"token": "token_id:8", "logprob": -0.25}]
    }
    response = chat_completion_to_response(
        completion, {"input": "x", "tools": [WEATHER_TOOL]}, uses_reasoning_parser=True
    )
    kinds = [i["type"] for i in response["output"]]
    assert kinds == ["reasoning", "function_call", "function_call"]
    first, last = response["output"][1], response["output"][2]
    assert (
        first["call_id"] == "call_a"
        and first["name"] == "get_weather"
        and first["arguments"] == '{"city":"sf"}'
    )
    assert "generation_token_ids" not in first
    assert last["prompt_token_ids"] == [1, 2, 3]
    assert last["generation_token_ids"] == [7, 8]
    assert last["generation_log_probs"] == [-0.5, -0.25]
    assert response["tools"] == [WEATHER_TOOL]


def test_token_ids_parsed_from_logprobs_only() -> None:
    completion = _completion({"content": "ok"})
    completion["choices"][0]["logprobs"] = {"content": [{"token": "token_id:42", "logprob": -1.0}]}
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)
    assert response["output"][-1]["generation_token_ids"] == [42]
    assert response["output"][-1]["generation_log_probs"] == [-1.0]


def test_plain_logprobs_do_not_produce_token_fields() -> None:
    completion = _completion({"content": "ok"})
    completion["choices"][0]["logprobs"] = {"content": [{"token": "ok", "logprob": -1.0}]}
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)
    assert not {"generation_token_ids", "generation_log_probs"} & response["output"][-1].keys()


def test_message_bundle_wins() -> None:
    completion = _completion(
        {
            "content": "ok",
            "prompt_token_ids": [1],
            "generation_token_ids": [2],
            "generation_log_probs": [-0.1],
        }
    )
    completion["choices"][0]["token_ids"] = [99]
    response = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)
    item = response["output"][-1]
    assert (item["prompt_token_ids"], item["generation_token_ids"], item["generation_log_probs"]) == (
        [1],
        [2],
        [-0.1],
    )


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_incomplete_finish_reasons(finish: str, reason: str) -> None:
    response = chat_completion_to_response(
        _completion({"content": "partial"}, finish_reason=finish), {"input": "x"}, uses_reasoning_parser=False
    )
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"


def test_empty_answer_still_has_a_message() -> None:
    response = chat_completion_to_response(
        _completion({"content": None}), {"input": "x"}, uses_reasoning_parser=False
    )
    assert [i["type"] for i in response["output"]] == ["message"]
    assert response["output"][0]["content"][0]["text"] == ""


def test_usage_details_are_mapped() -> None:
    completion = _completion({"content": "x"})
    completion["usage"] = {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    usage = chat_completion_to_response(completion, {"input": "x"}, uses_reasoning_parser=False)["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 2}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 1}


def test_no_choices_is_a_typed_error() -> None:
    with pytest.raises(ConversionError, match=r"choices\[0\]\.message"):
        chat_completion_to_response({"choices": []}, {"input": "x"}, uses_reasoning_parser=False)


def test_round_trip_output_back_into_input() -> None:
    """A turn's output fed back as input gives the assistant chat message with exact tokens."""
    completion = _completion(
        {"content": "<think>r</think>final", "prompt_token_ids": [1], "generation_token_ids": [2, 3]},
    )
    completion["choices"][0]["logprobs"] = {
        "content": [{"token": "token_id:2", "logprob": -0.1}, {"token": "token_id:3", "logprob": -0.2}]
    }
    response = chat_completion_to_response(completion, {"input": "q"}, uses_reasoning_parser=True)
    chat = responses_to_chat_params({"input": [{"role": "user", "content": "q"}, *response["output"]]})
    assert chat["messages"][1] == {
        "role": "assistant",
        "reasoning_content": "r",
        "content": "final",
        "prompt_token_ids": [1],
        "generation_token_ids": [2, 3],
        "generation_log_probs": [-0.1, -0.2],
    }


# ------------------------------------------------------------------------------------ split_think
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", (None, "plain")),
        ("<think>a</think>b", ("a", "b")),
        ("<think>a</think>b<think>c</think>d", ("a\n\nc", "bd")),
        ("prefilled reasoning</think>\nanswer", ("prefilled reasoning", "answer")),
        ("<think>cut off", ("cut off", "")),
        ("<think></think>x", (None, "x")),
    ],
)
def test_split_think(text: str, expected: tuple[str | None, str]) -> None:
    assert split_think(text) == expected
