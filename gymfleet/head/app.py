"""The head server: service discovery and config distribution over HTTP.

Routes (NeMo Gym compatible first, gymfleet's registry API second):

* ``GET /`` -> ``{"status": "ok"}`` (a browser, ``Accept: text/html``, gets the dashboard page instead)
* ``GET /global_config_dict_yaml`` -> a JSON *string* holding YAML (exactly NeMo Gym's body, so its clients work
  unchanged): the static fleet config plus the blocks of every registered server, secrets redacted (in full for a
  request carrying the fleet token).
* ``GET /server_instances`` -> JSON list of live instances with NeMo Gym's 13 fields (+ gymfleet extras).
* ``POST /registry/register|heartbeat|deregister``, ``GET /registry/instances?name=...``: the live registry.
* ``GET /metrics``, ``GET /dashboard``, ``GET /dashboard/data``: see :mod:`gymfleet.metrics` and
  :mod:`gymfleet.head.dashboard`. With a fleet token every route but ``GET /`` requires it (:mod:`gymfleet.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from gymfleet.auth import is_authenticated
from gymfleet.config import SERVER_TYPES, to_yaml
from gymfleet.head.dashboard import dashboard_response, install_dashboard, wants_html
from gymfleet.head.registry import InstanceInfo, RegisteredInstance, Registry
from gymfleet.metrics import track_head
from gymfleet.server.stack import install_fleet_stack

__all__ = ["Head", "build_head_app"]

logger = logging.getLogger("gymfleet.head")


class _InstanceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_id: str


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


class Head:
    """Registry + static config + the view served to clients. Owns no sockets: see :func:`build_head_app`."""

    def __init__(
        self,
        static_config: Mapping[str, Any],
        *,
        lease_s: float = 10.0,
        evict_after_s: float = 60.0,
        sweep_interval_s: float | None = None,
    ) -> None:
        self.static_config: dict[str, Any] = dict(static_config)
        self.registry = Registry(lease_s=lease_s, evict_after_s=evict_after_s)
        self.heartbeat_interval_s = max(0.05, lease_s / 3)
        self.sweep_interval_s = sweep_interval_s or max(0.05, lease_s / 4)
        self._view_cache: tuple[int, str] | None = None

    # ------------------------------------------------------------------------------ config view
    def config_view(self) -> dict[str, Any]:
        """Static config with host/port of registered servers filled in and remote servers added."""
        view = copy.deepcopy(self.static_config)
        seen: set[str] = set()
        for entry in self.registry.instances():
            info = entry.info
            if info.name in seen or entry.status != "healthy":
                continue
            seen.add(info.name)
            block = view.get(info.name)
            impl_block = _impl_block(block, info.server_type, info.impl)
            if impl_block is None:
                impl_block = dict(info.block)
                view[info.name] = {info.server_type: {info.impl: impl_block}}
            impl_block["host"] = info.host
            impl_block["port"] = info.port
        return view

    def config_view_yaml(self) -> str:
        version = self.registry.version
        if self._view_cache is None or self._view_cache[0] != version:
            self._view_cache = (version, to_yaml(self.config_view(), redact=True))  # also masks secrets in URLs
        return self._view_cache[1]

    def set_static_config(self, config: Mapping[str, Any]) -> None:
        self.static_config = dict(config)
        self._view_cache = None

    # ------------------------------------------------------------------------------ lifecycle
    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            marked, evicted = self.registry.sweep()
            for instance_id in marked:
                entry = self.registry.get(instance_id)
                if entry is not None:
                    logger.warning(
                        "server '%s' at %s missed its lease (%.1fs); marked unhealthy",
                        entry.info.name, entry.info.url, self.registry.lease_s,
                    )
            for instance_id in evicted:
                logger.warning("evicted instance %s after %.0fs without heartbeat", instance_id,
                               self.registry.lease_s + self.registry.evict_after_s)


def _impl_block(block: Any, server_type: str, impl: str) -> dict[str, Any] | None:
    if not isinstance(block, dict):
        return None
    typed = block.get(server_type)
    if not isinstance(typed, dict):
        return None
    inner = typed.get(impl)
    return inner if isinstance(inner, dict) else None


def _routing_entry(entry: RegisteredInstance) -> dict[str, Any]:
    info = entry.info
    return {
        "instance_id": entry.instance_id,
        "name": info.name,
        "server_type": info.server_type,
        "impl": info.impl,
        "url": info.url,
        "status": entry.status,
        "node": info.node,
    }


def build_head_app(head: Head) -> FastAPI:
    """The FastAPI app of a head. Runs the lease sweeper while the app is up."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(head.sweep_forever(), name="gymfleet-head-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    app = FastAPI(title="gymfleet head", lifespan=lifespan)
    app.state.head = head

    @app.get("/")
    async def root(request: Request) -> Response:
        if wants_html(request):  # a browser: the dashboard page (it holds no data)
            return dashboard_response()
        return _json({"status": "ok"})

    @app.get("/global_config_dict_yaml")
    async def global_config_dict_yaml(request: Request) -> Response:
        if is_authenticated(request.scope):  # a client holding the fleet token is trusted with the secrets
            return JSONResponse(to_yaml(head.config_view()))
        return JSONResponse(head.config_view_yaml())

    @app.get("/server_instances")
    async def server_instances() -> Response:
        return _json(head.registry.display())

    @app.post("/registry/register")
    async def register(info: InstanceInfo) -> Response:
        entry = head.registry.register(info)
        logger.info("registered '%s' (%s/%s) at %s", info.name, info.server_type, info.impl, info.url)
        return _json(
            {
                "instance_id": entry.instance_id,
                "lease_s": head.registry.lease_s,
                "heartbeat_interval_s": head.heartbeat_interval_s,
            }
        )

    @app.post("/registry/heartbeat")
    async def heartbeat(ref: _InstanceRef) -> Response:
        if head.registry.heartbeat(ref.instance_id):
            return _json({"ok": True, "version": head.registry.version})
        return _json(
            {
                "error": {
                    "type": "unknown_instance",
                    "message": f"instance {ref.instance_id} is not registered; register again",
                }
            },
            404,
        )

    @app.post("/registry/deregister")
    async def deregister(ref: _InstanceRef) -> Response:
        entry = head.registry.get(ref.instance_id)
        removed = head.registry.deregister(ref.instance_id)
        if entry is not None:
            logger.info("deregistered '%s' at %s", entry.info.name, entry.info.url)
        return _json({"ok": removed})

    @app.get("/registry/instances")
    async def instances(name: str | None = Query(default=None)) -> Response:
        registry = head.registry
        entries = registry.by_name(name, healthy_only=False) if name else registry.instances()
        return _json(
            {
                "version": registry.version,
                "instances": [_routing_entry(e) for e in entries],
                "names": sorted(registry.names() | _static_server_names(head.static_config)),
            }
        )

    install_dashboard(app, head)
    install_fleet_stack(app, server_name="head_server", config=head.static_config)  # metrics, token, limits
    track_head(head)
    return app


def _static_server_names(config: Mapping[str, Any]) -> set[str]:
    names = set()
    for key, value in config.items():
        if isinstance(value, dict) and any(t in value for t in SERVER_TYPES):
            names.add(key)
    return names
