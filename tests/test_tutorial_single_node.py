"""The tutorial's single-node flow, verbatim: ``ng_run "+config_paths=[...]"`` with openai_model on port 11000.

The model upstream is a small fake OpenAI server (the LLM is the one thing we do not own); env.yaml points the
tutorial's ``${policy_base_url}`` at it, exactly as a user's env.yaml would point at OpenAI or vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.fake_openai import FakeOpenAI, Reply
from tests.fleet_helpers import REPO, pid_alive

CONFIG_PATHS = (
    "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml"
)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tool_then_answer(body: dict) -> Reply:
    items = body.get("input") or []
    if any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
        return Reply(content="It is cold in sf.")
    return Reply(tool_calls=[("get_weather", {"city": "sf"})])


@pytest.mark.skipif(not port_free(11000), reason="port 11000 (the tutorial's head port) is in use on this machine")
async def test_tutorial_ng_run_verbatim(tmp_path: Path):
    ng_run = Path(sys.executable).with_name("ng_run")
    assert ng_run.exists(), "install the package (pip install -e .) so ng_run is on PATH"
    async with FakeOpenAI(policy=tool_then_answer) as fake:
        (tmp_path / "env.yaml").write_text(yaml.safe_dump({
            "policy_base_url": fake.base_url,
            "policy_api_key": "sk-tutorial-secret",
            "policy_model_name": "meta-llama/Llama-3.1-8B-Instruct",
        }))
        proc = await asyncio.create_subprocess_exec(
            str(ng_run), f"+config_paths=[{CONFIG_PATHS}]",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ),
        )
        pids: list[int] = []
        try:
            async with httpx.AsyncClient(base_url="http://127.0.0.1:11000", timeout=5) as head:
                instances: list[dict] = []
                for _ in range(600):
                    with contextlib.suppress(httpx.TransportError):
                        instances = (await head.get("/server_instances")).json()
                    if len(instances) == 3:
                        break
                    assert proc.returncode is None, (await proc.stdout.read()).decode()[-3000:]
                    await asyncio.sleep(0.1)
                assert {i["process_name"] for i in instances} == {
                    "example_single_tool_call", "example_single_tool_call_simple_agent", "policy_model"}
                pids = [i["pid"] for i in instances]
                text = json.loads((await head.get("/global_config_dict_yaml")).content)
                config = yaml.safe_load(text)
                assert config["head_server"] == {"host": "127.0.0.1", "port": 11000}
                assert "sk-tutorial-secret" not in text  # env.yaml secrets are not served
                agent = next(i for i in instances if i["process_name"] == "example_single_tool_call_simple_agent")
            row = json.loads((REPO / "resources_servers/example_single_tool_call/data/example.jsonl")
                             .read_text().splitlines()[0])
            async with httpx.AsyncClient(timeout=30) as client:
                result = (await client.post(agent["url"] + "/run", json=row)).json()
            assert result["reward"] == 1.0, result
            sent = next(r for r in fake.requests if r.path.endswith("/responses"))
            assert sent.json["model"] == "meta-llama/Llama-3.1-8B-Instruct"
            assert sent.headers.get("Authorization") == "Bearer sk-tutorial-secret"
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except asyncio.TimeoutError:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        assert proc.returncode == 0
        assert not any(pid_alive(p) for p in pids)
