"""Wire models: strictness where clients send, leniency where upstreams answer, exports pinned."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import gymfleet.wire as wire
from gymfleet.wire import (
    AggregateMetrics,
    AggregateMetricsRequest,
    BaseRunRequest,
    BaseSeedSessionRequest,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ChatCompletion,
    ChatCompletionCreateParams,
    Response,
    ResponseCreateParams,
)


def test_exports() -> None:
    assert sorted(wire.__all__) == sorted(
        [
            "AggregateMetrics",
            "AggregateMetricsRequest",
            "BaseRunRequest",
            "BaseSeedSessionRequest",
            "BaseSeedSessionResponse",
            "BaseVerifyRequest",
            "BaseVerifyResponse",
            "ChatCompletion",
            "ChatCompletionCreateParams",
            "ConversionError",
            "Response",
            "ResponseCreateParams",
            "TOKEN_ID_FIELDS",
            "chat_completion_to_response",
            "responses_to_chat_params",
            "split_think",
        ]
    )
    for name in wire.__all__:
        assert getattr(wire, name) is not None


def test_create_params_defaults_and_exclude_unset() -> None:
    params = ResponseCreateParams(input=[{"role": "user", "content": "hi"}])
    assert params.tools == [] and params.tool_choice == "auto" and params.parallel_tool_calls is True
    assert params.model_dump(exclude_unset=True) == {"input": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"input": "x", "temprature": 1.0}, ("temprature",)),
        ({"input": "x", "stream": True}, ("stream",)),
        ({}, ("input",)),
        ({"input": "x", "parallel_tool_calls": "maybe"}, ("parallel_tool_calls",)),
    ],
)
def test_create_params_are_strict(body: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ResponseCreateParams.model_validate(body)
    assert info.value.errors()[0]["loc"] == loc


def test_input_items_are_kept_as_dicts() -> None:
    item = {
        "type": "function_call",
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
        "generation_token_ids": [1],
    }
    params = ResponseCreateParams(input=[item])
    assert params.input == [item]


def test_minimal_upstream_response_validates_and_keeps_extras() -> None:
    response = Response.model_validate({"output": [], "custom": 1})
    assert response.object == "response" and response.custom == 1  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError):
        Response.model_validate({"id": "resp_1"})


def test_chat_models_are_lenient() -> None:
    params = ChatCompletionCreateParams.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"a": 1}}
    )
    assert params.model_dump(exclude_unset=True)["chat_template_kwargs"] == {"a": 1}
    assert ChatCompletion.model_validate({"prompt_token_ids": [1]}).model_dump()["prompt_token_ids"] == [1]
    with pytest.raises(pydantic.ValidationError):
        ChatCompletionCreateParams.model_validate({"model": "m"})


def test_run_and_verify_models_forward_dataset_fields() -> None:
    row = {"responses_create_params": {"input": "q"}, "expected_answer": "4", "_ng_task_index": 3}
    run = BaseRunRequest.model_validate(row)
    assert run.model_dump(exclude_unset=True) == row
    verify = BaseVerifyRequest.model_validate({**run.model_dump(), "response": {"output": []}})
    result = BaseVerifyResponse(**verify.model_dump(), reward=1.0)
    dumped = result.model_dump()
    assert dumped["expected_answer"] == "4" and dumped["_ng_task_index"] == 3 and dumped["reward"] == 1.0
    with pytest.raises(pydantic.ValidationError):
        BaseRunRequest.model_validate({"responses_create_params": {"input": "q", "bogus": 1}})


def test_seed_session_and_metrics_models() -> None:
    assert BaseSeedSessionRequest.model_validate({"anything": 1}).model_dump() == {"anything": 1}
    assert AggregateMetricsRequest(verify_responses=[{"reward": 1.0}]).verify_responses == [{"reward": 1.0}]
    assert AggregateMetrics().model_dump() == {
        "group_level_metrics": [],
        "agent_metrics": {},
        "key_metrics": {},
    }
