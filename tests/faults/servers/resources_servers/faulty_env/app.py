"""faulty_env: a stateful test environment whose /verify misbehaves on request, for the fault suite.

A row's ``fault`` field picks the behaviour of ``/verify`` (and ``/seed_session``):

* none: reward 1.0 when this session called ``get_weather`` (counted per session, on this process) and the episode
  ended with a message; a session this process never seeded scores 0.0, which is exactly the silent wrong reward a
  session routed to the wrong process produces;
* ``hang``: sleep an hour (a verifier waiting on something that never comes);
* ``cpu``: a CPU-bound verifier that never ends, run through ``gymfleet.server.isolate.run_isolated`` with
  ``cpu_deadline_s`` (the server stays responsive and the work is killed);
* ``cpu_inline``: the same loop inside the event loop for ``inline_cpu_s`` seconds (what a naive server does);
* ``import_error`` / ``missing_file`` / ``crash``: infrastructure failures (a dependency missing on this node, a file
  staged on another node, a bug).

With ``sidecar: true`` the server starts a helper process (a TCP listener, like a sandbox or tool sidecar) in its own
process group at startup; ``GET /sidecar`` names its pid and port.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer, current_session_id
from gymfleet.server.isolate import run_isolated
from gymfleet.wire import (
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
)

SIDECAR_CODE = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(3600)\n"
)


class FaultyEnvConfig(BaseResourcesServerConfig):
    cpu_deadline_s: float = 1.0
    inline_cpu_s: float = 1.0
    sidecar: bool = False


class GetWeatherRequest(BaseModel):
    city: str


def spin_forever() -> None:
    """A verifier stuck in pure Python (think: an exponential sympy simplification)."""
    x = 0
    while True:
        x += 1


class FaultyEnv(SimpleResourcesServer):
    config: FaultyEnvConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sessions: dict[str, int] = {}
        self.sidecar: dict[str, int] = {}

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        app.get("/sidecar")(self.sidecar_info)
        if self.config.sidecar:
            self._start_sidecar()
        return app

    def _start_sidecar(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", SIDECAR_CODE], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        self.sidecar = {"pid": proc.pid, "port": port}

    async def sidecar_info(self) -> dict[str, int]:
        return self.sidecar

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        self.sessions[current_session_id()] = 0
        return BaseSeedSessionResponse()

    async def get_weather(self, body: GetWeatherRequest) -> dict[str, Any]:
        sid = current_session_id()
        if sid in self.sessions:
            self.sessions[sid] += 1
        return {"city": body.city, "weather_description": f"The weather in {body.city} is cold.", "pid": os.getpid()}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        fault = getattr(body, "fault", None)
        if fault == "hang":
            await asyncio.sleep(3600)
        elif fault == "cpu":
            await run_isolated(spin_forever, timeout_s=self.config.cpu_deadline_s)
        elif fault == "cpu_inline":
            end = time.monotonic() + self.config.inline_cpu_s
            while time.monotonic() < end:
                pass
        elif fault == "import_error":
            raise ModuleNotFoundError("No module named 'sympy_on_this_node'")
        elif fault == "missing_file":
            with open("/nonexistent/staged/on/another/node.json") as fh:
                fh.read()
        elif fault == "crash":
            raise RuntimeError("verifier bug")
        calls = self.sessions.pop(current_session_id(), 0)
        answered = any(item.get("type") == "message" for item in body.response.output)
        reward = 1.0 if calls > 0 and answered else 0.0
        return BaseVerifyResponse(**body.model_dump(), reward=reward, verify_pid=os.getpid())


if __name__ == "__main__":
    FaultyEnv.run_webserver()
