"""arithmetic: the answer extraction rule, /verify, and the shipped data files."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.fakes.server_module import load_server_module

SERVER_DIR = Path(__file__).resolve().parents[1]


tasks = load_server_module(SERVER_DIR, "tasks.py")
app_module = load_server_module(SERVER_DIR)


@pytest.mark.parametrize(
    "family, text, expected, ok",
    [
        ("add", "3 + 5 = 8", "8", True),
        ("add", "8", "8", True),
        ("add", "The answer is 8, or maybe 9.", "8", False),  # the last number counts
        ("add", "eight", "8", False),
        ("first_letter", "The first letter of the word 'dog' is 'D'.", "d", True),
        ("first_letter", "It is a letter.", "d", False),  # 'a' is the last standalone letter
        ("last_letter", "The last letter of the word 'cat' is 't'.", "t", True),
        ("repeat", "The tree is a tree.", "tree", True),
        ("repeat", "The word 'apple' is repeated.", "apple", False),
        ("repeat", "", "apple", False),
    ],
)
def test_one_extraction_rule(family, text, expected, ok) -> None:
    assert tasks.check_answer(family, text, expected) is ok


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown task family"):
        tasks.extract_answer("calculus", "1")


def test_shipped_data_is_the_generator_output() -> None:
    for filename, n, seed in (("example.jsonl", 8, 5), ("train.jsonl", 200, 11)):
        rows = [json.loads(line) for line in (SERVER_DIR / "data" / filename).read_text().splitlines()]
        assert rows == tasks.make_rows(n, seed=seed), filename
    rows = tasks.make_rows(8, seed=5)
    assert {r["task"] for r in rows} == set(tasks.FAMILIES)
    for row in rows:
        question = row["responses_create_params"]["input"][0]["content"]
        if row["task"] == "add":
            a, b = (int(x) for x in question.removeprefix("What is ").removesuffix("?").split(" + "))
            assert row["expected_answer"] == str(a + b)


def _verify_body(row: dict, output: list[dict]) -> dict:
    return {**row, "response": {"id": "r", "output": output, "model": "m"}}


def _message(text: str) -> dict:
    return {
        "type": "message",
        "role": "assistant",
        "id": "m1",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


@pytest.fixture
async def client():
    server = app_module.ArithmeticServer(config={"name": "arithmetic", "domain": "math"})
    transport = httpx.ASGITransport(app=server.setup_webserver())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


async def test_verify_scores_the_final_message(client) -> None:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "What is 3 + 5?"}]},
        "task": "add",
        "expected_answer": "8",
    }
    right = await client.post("/verify", json=_verify_body(row, [_message("3 + 5 = 8")]))
    assert right.status_code == 200, right.text
    assert right.json()["reward"] == 1.0 and right.json()["extracted_answer"] == "8"
    assert right.json()["expected_answer"] == "8"  # dataset fields are echoed
    wrong = await client.post("/verify", json=_verify_body(row, [_message("3 + 5 = 9")]))
    assert wrong.json()["reward"] == 0.0 and wrong.json()["extracted_answer"] == "9"
    silent = await client.post(
        "/verify",
        json=_verify_body(
            row, [{"type": "function_call", "id": "f", "call_id": "c", "name": "calc", "arguments": "{}"}]
        ),
    )
    assert silent.json()["reward"] == 0.0 and silent.json()["extracted_answer"] is None


async def test_verify_without_task_fields_says_what_is_missing(client) -> None:
    row = {"responses_create_params": {"input": "What is 3 + 5?"}}
    resp = await client.post("/verify", json=_verify_body(row, [_message("8")]))
    assert resp.status_code == 422
    assert "needs 'task'" in resp.json()["detail"]
