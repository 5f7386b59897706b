"""code_exec: reward the model's Python for passing the row's unit tests, run in a sandboxed subprocess.

The candidate is the last fenced code block of the model's last message (the whole message when there is
none). ``/verify`` body: the run request + ``response`` + ``unit_tests`` (a list of snippets, typically
``assert f(1) == 2``). The sandbox (see ``code_sandbox.py``): temp cwd, rlimits (CPU, memory, files,
processes), wall-clock timeout, no network. It runs inside a Ray task when the fleet has a cluster
(``ray: auto`` with ``ray_head_node_address``, or ``ray: true``), else as a local subprocess.

Reward: 1.0 when every test passed (``reward_mode: all_pass``) or the passed fraction (``fraction``). A
candidate that runs past ``timeout_s`` scores 0 with ``sandbox.status == "timeout"``: that is the model's
doing. A Ray task that does not come back within ``timeout_s + offload_margin_s`` (a lost or overloaded
cluster) answers 504 ``offload_timeout``: that is infrastructure, not a score.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import code_sandbox as sandbox
from fastapi import FastAPI

from gymfleet import ray_support
from gymfleet.ray_support.handlers import install_offload_error_handlers
from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer
from gymfleet.wire import BaseVerifyRequest, BaseVerifyResponse

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class CodeExecConfig(BaseResourcesServerConfig):
    ray: bool | str = "auto"
    timeout_s: float = 5.0
    cpu_s: int | None = None  # default: ceil(timeout_s)
    memory_mb: int = 512
    max_files: int = 64
    max_processes: int = 64
    network: Literal["auto", "unshare", "audit"] = "auto"
    reward_mode: Literal["all_pass", "fraction"] = "all_pass"
    local_concurrency: int = 2
    offload_margin_s: float = 10.0


class CodeExecRequest(BaseVerifyRequest):
    unit_tests: list[str]


class CodeExecResponse(BaseVerifyResponse):
    unit_tests: list[str]
    sandbox: dict[str, Any] = {}
    verify_trace: dict[str, Any] = {}


def extract_code(output: list[dict[str, Any]]) -> str:
    """The last fenced code block of the last assistant message (or its whole text)."""
    text = ""
    for item in reversed(output):
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
            content = item.get("content")
            text = (
                content
                if isinstance(content, str)
                else "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
            )
            break
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


class CodeExecServer(SimpleResourcesServer):
    config: CodeExecConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offloader = ray_support.Offloader(
            ray_support.ray_mode({"ray": self.config.ray}), local_pool=False, ship_modules=[sandbox]
        )
        self._local_slots = asyncio.Semaphore(self.config.local_concurrency)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        install_offload_error_handlers(app, server_name=self.config.name)
        app.add_middleware(ray_support.CancelOnDisconnect, paths=("/verify",))
        return app

    def limits(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "timeout_s": cfg.timeout_s,
            "cpu_s": cfg.cpu_s or max(1, int(cfg.timeout_s + 0.999)),
            "memory_mb": cfg.memory_mb,
            "max_files": cfg.max_files,
            "max_processes": cfg.max_processes,
            "network": cfg.network,
        }

    async def verify(self, body: CodeExecRequest) -> CodeExecResponse:  # type: ignore[override]
        code = extract_code(body.response.output)
        limits = self.limits()
        trace: dict[str, Any] = {}
        if await self.offloader.start() == "ray":
            result = await self.offloader.run_traced(
                sandbox.run_sandbox,
                code,
                body.unit_tests,
                limits,
                timeout=self.config.timeout_s + self.config.offload_margin_s,
            )
            summary = result.value
            trace = {
                "backend": "ray",
                "node_id": result.node_id,
                "pid": result.pid,
                "hostname": result.hostname,
                "elapsed_s": round(result.elapsed_s, 6),
                "wall_s": round(result.wall_s, 6),
            }
        else:
            async with self._local_slots:
                summary = await sandbox.run_sandbox_async(code, body.unit_tests, limits)
            trace = {"backend": "local"}
        total = summary["total"] or len(body.unit_tests) or 1
        if self.config.reward_mode == "fraction":
            reward = summary["passed"] / total
        else:
            reward = 1.0 if summary["status"] == "passed" else 0.0
        return CodeExecResponse(
            **{**body.model_dump(), "reward": reward, "sandbox": summary, "verify_trace": trace}
        )


if __name__ == "__main__":
    CodeExecServer.run_webserver()
