"""math_verify: reward 1.0 when the model's final answer equals the expected answer, checked symbolically.

Each check runs off the server's event loop -- as a Ray task when the fleet has a cluster (``ray: auto`` and
``ray_head_node_address`` set, or ``ray: true``), else in a local pool of killable processes -- with a hard
timeout: a pathological expression is killed, never hangs the server. Other verifies keep being served
meanwhile.

``/verify`` body: the run request (``responses_create_params``) + ``response`` + ``expected_answer``.
Answer: the body echoed with ``reward``, ``extracted_answer``, ``check`` ({equal, method, reason}) and
``verify_trace`` (backend, node, pid, seconds). A check past ``check_timeout_s`` answers 504 with
``{"error": {"type": "offload_timeout", ...}}`` (or reward 0 with ``on_timeout: zero_reward``).
"""

from __future__ import annotations

from typing import Any, Literal

import math_check
from fastapi import FastAPI

from gymfleet import ray_support
from gymfleet.ray_support.handlers import install_offload_error_handlers
from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer
from gymfleet.wire import BaseVerifyRequest, BaseVerifyResponse


class MathVerifyConfig(BaseResourcesServerConfig):
    ray: bool | str = "auto"  # true: needs Ray (the launcher starts a cluster); false: local pool only
    check_timeout_s: float = 10.0
    local_workers: int = 2
    memory_limit_mb: int | None = 2048  # local workers' address-space limit
    max_in_flight: int | None = None
    on_timeout: Literal["error", "zero_reward"] = "error"


class MathVerifyRequest(BaseVerifyRequest):
    expected_answer: str


class MathVerifyResponse(BaseVerifyResponse):
    expected_answer: str
    extracted_answer: str | None = None
    check: dict[str, Any] = {}
    verify_trace: dict[str, Any] = {}


def response_text(output: list[dict[str, Any]]) -> str:
    """The text of the last assistant message of a Responses API output."""
    for item in reversed(output):
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
    return ""


class MathVerifyServer(SimpleResourcesServer):
    config: MathVerifyConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        memory = self.config.memory_limit_mb
        self.offloader = ray_support.Offloader(
            ray_support.ray_mode({"ray": self.config.ray}),
            local_workers=self.config.local_workers,
            max_in_flight=self.config.max_in_flight,
            preload=["sympy", "math_check"],
            ship_modules=[math_check],
            warmup=math_check.warm_up,
            memory_limit_bytes=memory * 2**20 if memory else None,
        )

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        install_offload_error_handlers(app, server_name=self.config.name)
        app.add_middleware(ray_support.CancelOnDisconnect, paths=("/verify",))
        return app

    async def verify(self, body: MathVerifyRequest) -> MathVerifyResponse:  # type: ignore[override]
        candidate = math_check.extract_answer(response_text(body.response.output))
        fields = body.model_dump()
        if candidate is None:
            return MathVerifyResponse(
                **{
                    **fields,
                    "reward": 0.0,
                    "check": {"equal": False, "method": "no_answer", "reason": "no final answer found"},
                }
            )
        try:
            result = await self.offloader.run_traced(
                math_check.check, candidate, body.expected_answer, timeout=self.config.check_timeout_s
            )
        except ray_support.OffloadTimeoutError as exc:
            if self.config.on_timeout == "error":
                raise
            return MathVerifyResponse(
                **{
                    **fields,
                    "reward": 0.0,
                    "extracted_answer": candidate,
                    "check": {"equal": False, "method": "timeout", "reason": str(exc)},
                }
            )
        trace = {
            "backend": result.backend,
            "node_id": result.node_id,
            "pid": result.pid,
            "hostname": result.hostname,
            "elapsed_s": round(result.elapsed_s, 6),
            "wall_s": round(result.wall_s, 6),
        }
        return MathVerifyResponse(
            **{
                **fields,
                "reward": 1.0 if result.value["equal"] else 0.0,
                "extracted_answer": candidate,
                "check": result.value,
                "verify_trace": trace,
            }
        )


if __name__ == "__main__":
    MathVerifyServer.run_webserver()
