"""The fast lane answers exactly what FastAPI would: the same app is built with and without it and every request of
a battery (success, every error path, routes the fast lane must leave alone) gets byte-identical answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from gymfleet.errors import UpstreamStatusError
from gymfleet.server.fastpath import FastJSONRouteMiddleware
from gymfleet.server.handlers import install_error_handlers
from gymfleet.server.routes import Cookies, add_json_route
from gymfleet.server.session import SessionMiddleware
from gymfleet.server.stack import install_fleet_stack


class Query(BaseModel):
    city: str
    days: int = Field(default=1, ge=1, le=7)


class Answer(BaseModel):
    city: str
    days: int
    note: str = "cold"


class Wider(Answer):
    secret: str = "never sent: the response model has no such field"


class Handlers:
    async def typed(self, body: Query) -> Answer:
        return Answer(city=body.city, days=body.days)

    async def subclass(self, body: Query) -> Answer:
        return Wider(city=body.city, days=body.days)  # FastAPI filters it down to Answer

    async def as_dict(self, body: Query) -> dict[str, Any]:
        return {"city": body.city, "nested": {"days": [body.days]}}

    async def untyped(self, body: Query):  # no return annotation: jsonable_encoder path
        return {"city": body.city}

    async def with_cookies(self, body: Query, cookies: Cookies) -> dict[str, Any]:
        cookies["tool_state"] = body.city
        return {"seen": sorted(cookies)}

    async def http_error(self, body: Query) -> Answer:
        raise HTTPException(status_code=418, detail=f"no tea in {body.city}")

    async def upstream_error(self, body: Query) -> Answer:
        raise UpstreamStatusError("policy answered 500", status=500, body={}, server_name="policy_model",
                                  url="http://127.0.0.1:1/v1/responses")

    async def crash(self, body: Query) -> Answer:
        raise ValueError(f"broken for {body.city}")


def build(fast: bool) -> FastAPI:
    app = FastAPI()
    h = Handlers()
    if fast:
        app.add_middleware(FastJSONRouteMiddleware)
    app.add_middleware(SessionMiddleware, cookie_name="S___s", secret=b"k" * 32, instance_id="i1", server_name="s")
    install_error_handlers(app, server_name="s", server_type_of=lambda name: "responses_api_models")
    install_fleet_stack(app, server_name="s", config={})
    for name in ("typed", "subclass", "as_dict", "untyped", "http_error", "upstream_error", "crash"):
        app.post(f"/{name}")(getattr(h, name))
    add_json_route(app, "/json_route", h.with_cookies)

    @app.post("/with_query")  # a query parameter: not plain, FastAPI answers
    async def with_query(body: Query, verbose: bool = False) -> dict[str, Any]:
        return {"city": body.city, "verbose": verbose}

    @app.post("/reads_request")
    async def reads_request(body: Query, request: Request) -> dict[str, Any]:
        return {"raw": (await request.body()).decode(), "path": request.url.path}

    @app.post("/sync")  # a plain def runs in FastAPI's threadpool: not fast-laned
    def sync(body: Query) -> dict[str, Any]:
        return {"city": body.city}

    return app


REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/typed", {"json": {"city": "Oslo", "days": 3}}),
    ("/typed", {"json": {"city": "Oslo", "days": "3"}}),  # lax coercion, as FastAPI does it
    ("/typed", {"json": {"city": "Oslo", "days": 9}}),  # 422, constraint
    ("/typed", {"json": {"days": 1}}),  # 422, missing field
    ("/typed", {"json": [1, 2]}),  # 422, wrong type
    ("/typed", {"content": b"{not json", "headers": {"content-type": "application/json"}}),  # 422 json_invalid
    ("/typed", {"content": b"", "headers": {"content-type": "application/json"}}),  # 422, missing body
    ("/typed", {"content": b'{"city": "Oslo"}', "headers": {"content-type": "text/plain"}}),
    ("/typed", {"content": b'{"city": "Oslo"}'}),  # no content type
    ("/typed", {"content": b'{"city": "Oslo"}', "headers": {"content-type": "application/vnd.x+json"}}),
    ("/typed", {"content": b'{"city": NaN}', "headers": {"content-type": "application/json"}}),
    ("/typed", {"content": b'{"city": "Oslo", "days": 100000000000000000000000}',
                "headers": {"content-type": "application/json"}}),
    ("/subclass", {"json": {"city": "Lima"}}),
    ("/as_dict", {"json": {"city": "Lima", "days": 2}}),
    ("/untyped", {"json": {"city": "Lima"}}),
    ("/json_route", {"json": {"city": "Rome"}, "headers": {"cookie": "other=1"}}),
    ("/http_error", {"json": {"city": "Rome"}}),
    ("/upstream_error", {"json": {"city": "Rome"}}),
    ("/crash", {"json": {"city": "Rome"}}),
    ("/with_query?verbose=true", {"json": {"city": "Rome"}}),
    ("/reads_request", {"json": {"city": "Rome"}}),
    ("/sync", {"json": {"city": "Rome"}}),
    ("/nowhere", {"json": {"city": "Rome"}}),
]


async def answer(app: FastAPI, path: str, kwargs: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        resp = await client.post(path, **kwargs)
    headers = {k: v for k, v in resp.headers.items() if k in ("content-type", "x-gymfleet-error", "content-length")}
    cookies = sorted(c.split(";")[0].split("=")[0] for c in resp.headers.get_list("set-cookie"))
    headers["set-cookie-names"] = ",".join(cookies)
    return resp.status_code, resp.content, headers


def _fast_lane(app: FastAPI) -> FastJSONRouteMiddleware:
    node: Any = app.middleware_stack
    while node is not None and not isinstance(node, FastJSONRouteMiddleware):
        node = getattr(node, "app", None)
    assert node is not None, "the fast lane is not in the middleware stack"
    return node


@pytest.mark.parametrize(("path", "kwargs"), REQUESTS, ids=[f"{i}{p}" for i, (p, _) in enumerate(REQUESTS)])
async def test_same_answer_as_fastapi(path: str, kwargs: dict[str, Any]) -> None:
    plain_app, fast_app = build(fast=False), build(fast=True)
    expected = await answer(plain_app, path, kwargs)
    observed = await answer(fast_app, path, kwargs)
    assert observed == expected


async def test_plain_routes_take_the_fast_lane_and_others_do_not() -> None:
    app = build(fast=True)
    await answer(app, "/typed", {"json": {"city": "Oslo"}})
    lane = _fast_lane(app)
    assert lane.answered == 1
    for path in ("/typed", "/subclass", "/as_dict", "/untyped", "/json_route", "/reads_request", "/crash"):
        await answer(app, path, {"json": {"city": "Oslo"}})
    assert lane.answered == 8
    before = lane.answered
    for path, kwargs in [("/with_query", {"json": {"city": "x"}}), ("/sync", {"json": {"city": "x"}}),
                         ("/typed", {"json": {"days": 1}}), ("/typed", {"content": b"{", "headers": {
                             "content-type": "application/json"}})]:
        await answer(app, path, kwargs)
    assert lane.answered == before  # the full app answered those


async def test_an_earlier_route_that_matches_the_path_keeps_it() -> None:
    """Starlette routes to the first full match: a catch-all POST declared before a plain route shadows it."""
    apps = []
    for fast in (False, True):
        app = FastAPI()
        if fast:
            app.add_middleware(FastJSONRouteMiddleware)

        @app.post("/{name}")
        async def catch_all(name: str) -> dict[str, str]:
            return {"caught": name}

        @app.post("/typed")
        async def typed(body: Query) -> Answer:
            return Answer(city=body.city, days=body.days)

        def sync_handler(request: Request, exc: Exception) -> Any:  # a plain def handler: run in the threadpool
            from fastapi.responses import JSONResponse

            return JSONResponse({"sync_handler": str(exc)}, status_code=409)

        @app.post("/x/conflict")
        async def conflict(body: Query) -> Answer:
            raise LookupError(body.city)

        app.add_exception_handler(LookupError, sync_handler)
        apps.append(app)
    for path in ("/typed", "/x/conflict"):
        expected = await answer(apps[0], path, {"json": {"city": "Oslo"}})
        assert await answer(apps[1], path, {"json": {"city": "Oslo"}}) == expected
    assert (await answer(apps[1], "/typed", {"json": {"city": "Oslo"}}))[1] == b'{"caught":"typed"}'
    assert (await answer(apps[1], "/x/conflict", {"json": {"city": "Oslo"}}))[0] == 409
    assert _fast_lane(apps[1]).answered == 2  # /x/conflict twice; /typed never (it is shadowed)


async def test_routes_added_after_the_first_request_are_served() -> None:
    app = build(fast=True)
    await answer(app, "/typed", {"json": {"city": "Oslo"}})

    @app.post("/late")
    async def late(body: Query) -> Answer:
        return Answer(city=body.city.upper(), days=body.days)

    status, content, _ = await answer(app, "/late", {"json": {"city": "oslo"}})
    assert (status, content) == (200, b'{"city":"OSLO","days":1,"note":"cold"}')
    assert _fast_lane(app).answered == 2
