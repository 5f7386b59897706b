"""Test environment with per-session state: proves one rollout keeps one session on a stateful server."""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer, current_session_id
from gymfleet.wire import BaseSeedSessionRequest, BaseSeedSessionResponse, BaseVerifyRequest, BaseVerifyResponse


class BumpRequest(BaseModel):
    pass


class SessionCounterServer(SimpleResourcesServer):
    config: BaseResourcesServerConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts: dict[str, int] = {}

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/bump")(self.bump)
        return app

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        self.counts[current_session_id()] = 0
        return BaseSeedSessionResponse()

    async def bump(self, body: BumpRequest) -> dict:
        sid = current_session_id()
        if sid not in self.counts:
            return {"error": "unknown session", "session_id": sid}
        self.counts[sid] += 1
        return {"count": self.counts[sid], "session_id": sid}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        sid = current_session_id()
        count = self.counts.pop(sid, -1)
        return BaseVerifyResponse(**body.model_dump(), reward=float(count), session_id=sid, pid=os.getpid())


if __name__ == "__main__":
    SessionCounterServer.run_webserver()
