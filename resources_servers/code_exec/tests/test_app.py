"""code_exec without Ray: real sandbox subprocesses (unshare --net where it works, else the audit hook)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fakes.server_module import load_server_module

SERVER_DIR = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.asyncio(loop_scope="module")




app_module = load_server_module(SERVER_DIR, on_path=True)
code_sandbox = sys.modules["code_sandbox"]


def body(code: str, tests: list[str]) -> dict[str, Any]:
    text = f"Here you go:\n```python\n{code}\n```\n"
    return {
        "responses_create_params": {"input": "write it"},
        "response": {
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
            ]
        },
        "unit_tests": tests,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    server = app_module.CodeExecServer(config={"name": "code_exec", "ray": False, "timeout_s": 2.0})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.setup_webserver()), base_url="http://code_exec", timeout=30
    ) as c:
        yield c


class Listener:
    """A real TCP listener on 127.0.0.1 that counts accepted connections (the sandbox must never reach it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


async def test_passing_and_failing_solutions(client: httpx.AsyncClient) -> None:
    good = await client.post(
        "/verify", json=body("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])
    )
    assert good.status_code == 200, good.text
    assert good.json()["reward"] == 1.0 and good.json()["sandbox"]["status"] == "passed"
    assert good.json()["verify_trace"] == {"backend": "local"}
    bad = (
        await client.post(
            "/verify",
            json=body("def add(a, b):\n    return a - b", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]),
        )
    ).json()
    assert bad["reward"] == 0.0 and (bad["sandbox"]["passed"], bad["sandbox"]["total"]) == (1, 2)
    assert bad["sandbox"]["tests"][0]["error"].startswith("AssertionError")
    broken = (
        await client.post("/verify", json=body("def add(a, b) return", ["assert add(1, 2) == 3"]))
    ).json()
    assert broken["reward"] == 0.0 and "SyntaxError" in broken["sandbox"]["tests"][0]["error"]


async def test_infinite_loop_is_cut_at_the_timeout(client: httpx.AsyncClient) -> None:
    resp = (await client.post("/verify", json=body("while True:\n    pass", ["assert True"]))).json()
    assert resp["reward"] == 0.0 and resp["sandbox"]["status"] == "timeout"
    assert 1.9 <= resp["sandbox"]["duration_s"] < 4.0


async def test_memory_and_file_limits(client: httpx.AsyncClient) -> None:
    hog = (await client.post("/verify", json=body("x = bytearray(3 * 1024**3)", ["assert True"]))).json()
    assert hog["reward"] == 0.0 and "MemoryError" in hog["sandbox"]["tests"][0]["error"]
    files = (
        await client.post(
            "/verify", json=body("handles = [open(f'f{i}', 'w') for i in range(500)]", ["assert True"])
        )
    ).json()
    assert files["reward"] == 0.0 and "Too many open files" in files["sandbox"]["tests"][0]["error"]


async def test_runs_in_a_temp_cwd_that_is_removed(client: httpx.AsyncClient) -> None:
    code = "import os\nCWD = os.getcwd()\nopen('scratch.txt', 'w').write('x')"
    resp = (
        await client.post(
            "/verify",
            json=body(
                code, ["assert CWD.startswith('/tmp/gfsandbox-')", "assert os.path.exists('scratch.txt')"]
            ),
        )
    ).json()
    assert resp["reward"] == 1.0, resp["sandbox"]


@pytest.mark.parametrize("network", ["auto", "audit"])
async def test_no_network(network: str) -> None:
    listener = Listener()
    try:
        target = f"('127.0.0.1', {listener.port})"
        code = f"import socket\nsocket.create_connection({target}, timeout=1).sendall(b'x')"
        summary = await code_sandbox.run_sandbox_async(
            code, ["assert True"], {"network": network, "timeout_s": 5}
        )
        assert summary["status"] == "failed", summary
        error = summary["tests"][0]["error"]
        assert "not allowed" in error or "unreachable" in error.lower(), error
        await asyncio.sleep(0.3)
        assert listener.accepted == 0
        expected = code_sandbox.isolation_mode(network)[0]
        assert summary["isolation"] == expected
    finally:
        listener.close()


async def test_no_subprocesses() -> None:
    summary = await code_sandbox.run_sandbox_async("import os\nos.system('true')", ["assert True"], {})
    assert summary["status"] == "failed" and "os.system is not allowed" in summary["tests"][0]["error"]


async def test_sync_runner_matches_async() -> None:
    code, tests = "def f(x):\n    return x * 2", ["assert f(2) == 4"]
    sync = await asyncio.to_thread(code_sandbox.run_sandbox, code, tests, {})
    assert sync["status"] == "passed" and sync["passed"] == 1
