"""The server base class every gymfleet server derives from (resources, agent and model servers).

A server is written the NeMo Gym way::

    class MyServer(SimpleResourcesServer):
        config: MyConfig                       # pydantic model of this server's config block

        def setup_webserver(self) -> FastAPI:
            app = super().setup_webserver()    # liveness, session cookie, error handlers, base routes
            app.post("/my_tool")(self.my_tool)
            return app

    if __name__ == "__main__":
        MyServer.run_webserver()               # reads its config from the environment, serves, registers

``self.server_client.post(server_name=..., url_path=..., json=...)`` calls other servers by name.
"""

from __future__ import annotations

import os
import secrets
import typing
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from gymfleet.client import ServerClient
from gymfleet.server.fastpath import FastJSONRouteMiddleware
from gymfleet.server.handlers import install_error_handlers
from gymfleet.server.routes import json_response
from gymfleet.server.session import SessionMiddleware
from gymfleet.server.stack import install_fleet_stack

__all__ = ["BaseServerConfig", "SimpleServer"]

SESSION_SECRET_ENV = "GYMFLEET_SESSION_SECRET"


class BaseServerConfig(BaseModel):
    """Fields every server block may have; implementation fields are added by subclasses (extra allowed)."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    entrypoint: str | None = None
    host: str | None = None
    port: int | None = None
    num_workers: int | None = None


class SimpleServer:
    """Base of all servers. Subclasses annotate ``config`` with their own config model."""

    config: BaseServerConfig
    server_type: ClassVar[str] = ""
    # True: per-session state lives in this process, so a session cookie of another instance (a restarted process, a
    # dead replica) is refused with a typed 409 session_lost instead of silently starting from an empty session.
    sessions_in_memory: ClassVar[bool] = False

    def __init__(
        self,
        *,
        config: BaseServerConfig | Mapping[str, Any],
        server_client: ServerClient | None = None,
        global_config: Mapping[str, Any] | None = None,
        instance_id: str | None = None,
        session_secret: str | bytes | None = None,
    ) -> None:
        model = self.config_class()
        self.config = config if isinstance(config, model) else model.model_validate(dict(config))
        self.global_config: dict[str, Any] = dict(global_config or {})
        self.server_client = server_client or ServerClient(self.global_config)
        self.instance_id = instance_id or uuid.uuid4().hex
        secret = session_secret or os.environ.get(SESSION_SECRET_ENV) or self.global_config.get("session_secret")
        if not secret:
            secret = secrets.token_hex(32)  # standalone server: sessions valid for this process only
        self.session_secret: bytes = secret.encode() if isinstance(secret, str) else secret

    @classmethod
    def config_class(cls) -> type[BaseServerConfig]:
        hints = typing.get_type_hints(cls)
        model = hints.get("config", BaseServerConfig)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{cls.__name__}.config must be annotated with a pydantic model, got {model!r}")
        return model

    @property
    def session_cookie_name(self) -> str:
        return f"{type(self).__name__}___{self.config.name}"

    def setup_webserver(self) -> FastAPI:
        """The FastAPI app with liveness, session cookies and typed error handling. Subclasses add routes."""
        app = FastAPI(title=f"{type(self).__name__} ({self.config.name or 'unnamed'})")
        app.state.server = self

        @app.get("/")
        async def liveness() -> Any:
            return json_response({"status": "ok"})

        app.add_middleware(FastJSONRouteMiddleware)  # innermost: every middleware below still sees each request
        app.add_middleware(
            SessionMiddleware,
            cookie_name=self.session_cookie_name,
            secret=self.session_secret,
            instance_id=self.instance_id,
            strict=self.sessions_in_memory,
            server_name=self.config.name,
        )
        install_error_handlers(app, server_name=self.config.name, server_type_of=self.server_client.server_type_of)
        install_fleet_stack(app, server_name=self.config.name, config=self.global_config,
                            rollout_paths=("/run",) if self.server_type == "responses_api_agents" else ())
        return app

    @classmethod
    def run_webserver(cls) -> None:
        """Entry point of ``python app.py``: config from the environment, serve, register with the head."""
        from gymfleet.server.runtime import serve

        serve(cls)
