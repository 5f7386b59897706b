"""math_verify without Ray: real local pool processes, real uvicorn for the disconnect case."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fakes.bodies import answer_body as verify_body
from tests.fakes.live_server import live_server
from tests.fakes.server_module import load_server_module

pytest.importorskip("sympy", reason="math_verify needs sympy (pip install -r requirements.txt)")

SERVER_DIR = Path(__file__).resolve().parents[1]
PATHOLOGICAL = "+".join(f"1/(x+{i})" for i in range(1, 90))  # simplify() of this runs for many minutes

pytestmark = pytest.mark.asyncio(loop_scope="module")




app_module = load_server_module(SERVER_DIR, on_path=True)
math_check = sys.modules["math_check"]



@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Any]:
    srv = app_module.MathVerifyServer(
        config={"name": "math_verify", "ray": False, "check_timeout_s": 2.0, "local_workers": 2}
    )
    try:
        yield srv
    finally:
        await srv.offloader.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.setup_webserver()), base_url="http://math_verify", timeout=30
    ) as c:
        yield c


@pytest.mark.parametrize(
    ("text", "expected", "reward", "method"),
    [
        ("So the answer is \\boxed{\\frac{5}{6}}.", "\\frac{5}{6}", 1.0, "exact"),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0, "symbolic"),
        ("\\boxed{\\pi/2}", "1.5707963267948966", 1.0, "numeric"),
        ("\\boxed{(x+1)^2}", "x^2 + 2x + 1", 1.0, "symbolic"),
        ("Answer: 2\\sqrt{2}", "\\sqrt{8}", 1.0, "symbolic"),
        ("\\boxed{3}", "4", 0.0, "numeric"),
        ("\\boxed{9^{9^{9^9}}}", "1", 0.0, "unparseable"),  # refused before evaluation: no memory bomb
        ("\\boxed{().__class__}", "1", 0.0, "unparseable"),  # never reaches eval
        ("I do not know.", "1", 0.0, "no_answer"),
    ],
)
async def test_verify_rewards(
    client: httpx.AsyncClient, text: str, expected: str, reward: float, method: str
) -> None:
    resp = await client.post("/verify", json=verify_body(text, expected))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["reward"], body["check"]["method"]) == (reward, method), body
    assert body["expected_answer"] == expected
    if method != "no_answer":
        assert body["verify_trace"]["backend"] == "local"
        assert body["verify_trace"]["pid"] != 0


async def test_hung_check_is_a_typed_timeout_while_others_complete(
    server: Any, client: httpx.AsyncClient
) -> None:
    killed_before = server.offloader.pool.killed
    hung = asyncio.create_task(client.post("/verify", json=verify_body(f"\\boxed{{{PATHOLOGICAL}}}", "1")))
    latencies = []
    for _ in range(6):
        start = time.monotonic()
        resp = await client.post("/verify", json=verify_body("\\boxed{42}", "42"))
        latencies.append(time.monotonic() - start)
        assert resp.json()["reward"] == 1.0
    resp = await asyncio.wait_for(hung, 15)
    assert resp.status_code == 504, resp.text
    error = resp.json()["error"]
    assert error["type"] == "offload_timeout" and error["timeout_s"] == 2.0 and error["backend"] == "local"
    assert error["server"] == "math_verify" and error["function"].endswith("math_check.check")
    assert server.offloader.pool.killed == killed_before + 1
    assert max(latencies) < 2.0, latencies  # served by the other worker while one was stuck


async def test_zero_reward_on_timeout_when_configured() -> None:
    srv = app_module.MathVerifyServer(
        config={
            "name": "mv",
            "ray": False,
            "check_timeout_s": 1.0,
            "local_workers": 1,
            "on_timeout": "zero_reward",
        }
    )
    try:
        body = app_module.MathVerifyRequest.model_validate(verify_body(f"\\boxed{{{PATHOLOGICAL}}}", "1"))
        result = await srv.verify(body)
        assert result.reward == 0.0 and result.check["method"] == "timeout"
    finally:
        await srv.offloader.close()


async def test_client_disconnect_kills_the_check(server: Any) -> None:
    async with live_server(server.setup_webserver()) as url:
        killed_before = server.offloader.pool.killed
        with pytest.raises(httpx.ReadTimeout):
            async with httpx.AsyncClient(timeout=0.5) as c:
                await c.post(url + "/verify", json=verify_body(f"\\boxed{{{PATHOLOGICAL}}}", "1"))
        deadline = time.monotonic() + 1.2  # well before the 2 s check timeout
        while server.offloader.pool.killed == killed_before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.offloader.pool.killed == killed_before + 1


async def test_math_check_is_pure_and_fast() -> None:
    assert math_check.extract_answer("first \\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert math_check.normalize("\\left( 1, 2 \\right)") == "( 1, 2 )"
    assert math_check.check("(1, 2)", "(1,2)")["equal"]
    assert not math_check.check("(1, 2)", "(2, 1)")["equal"]
    assert math_check.check("1,000", "1000")["method"] == "exact"
