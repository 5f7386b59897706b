"""The full agent loop as real processes: head + arithmetic + simple_agent + local_model (SmolLM2, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from responses_api_models.local_model.tests.conftest import skip_without_extra
from tests.fleet_helpers import EXAMPLE_CONFIG, REPO, run_fleet_process

skip_without_extra()

ARITHMETIC_CONFIG = "resources_servers/arithmetic/configs/arithmetic.yaml"
LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"
ARITHMETIC_DATA = REPO / "resources_servers/arithmetic/data/example.jsonl"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, weights_dir: Path):
    tmp = tmp_path_factory.mktemp("local_fleet")
    args = [
        "-c",
        ARITHMETIC_CONFIG,
        "-c",
        EXAMPLE_CONFIG,
        "-c",
        LOCAL_MODEL_CONFIG,
        "++head_server.port=0",
        "++policy_model.responses_api_models.local_model.max_batch_size=4",
    ]
    with run_fleet_process(tmp, args, timeout_s=180) as running:
        yield running


def test_arithmetic_rollout_with_the_real_model(fleet) -> None:
    row = json.loads(ARITHMETIC_DATA.read_text().splitlines()[0])  # "What is 5 + 6?"
    row["responses_create_params"].update(max_output_tokens=10, temperature=0)
    resp = httpx.post(fleet.url("arithmetic_simple_agent") + "/run", json=row, timeout=120)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["reward"] in (0.0, 1.0) and body["expected_answer"] == "11"
    [message] = body["response"]["output"]
    assert message["type"] == "message"
    text = message["content"][0]["text"]
    assert body["reward"] == (1.0 if body["extracted_answer"] == "11" else 0.0), text
    assert message["generation_token_ids"] and len(message["generation_log_probs"]) == len(
        message["generation_token_ids"]
    )
    assert body["response"]["model"] == "SmolLM2-135M-Instruct"


def test_tool_environment_rollout_never_fails_on_what_the_model_writes(fleet) -> None:
    row = json.loads(
        (REPO / "resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0]
    )
    row["responses_create_params"].update(max_output_tokens=6, temperature=0)
    resp = httpx.post(fleet.url("example_single_tool_call_simple_agent") + "/run", json=row, timeout=120)
    assert resp.status_code == 200, resp.text
    assert resp.json()["reward"] in (0.0, 1.0)
    assert all(
        i["type"] in ("message", "function_call", "function_call_output")
        for i in resp.json()["response"]["output"]
    )


def test_models_endpoint_through_the_fleet(fleet) -> None:
    models = httpx.get(fleet.url("policy_model") + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "SmolLM2-135M-Instruct"
