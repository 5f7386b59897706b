"""The fast lane for JSON POST routes: the same answers as FastAPI, a third of the work per request.

A rollout is six HTTP hops, and a FastAPI request spends most of its time in machinery a JSON route does not use:
route matching against every route, dependency solving, the exception and exit-stack middleware, the telemetry hooks.
:class:`FastJSONRouteMiddleware` sits innermost in a gymfleet app (inside metrics, auth, limits, error masking and
session cookies, which still see every request) and answers a request itself when its route is *plain*:

* a ``POST`` :class:`~fastapi.routing.APIRoute` without path parameters, dependencies, query/header/cookie
  parameters, background tasks, streaming or a form body, with exactly one body parameter that is not embedded,
  and an ``async def`` endpoint (an ``add_json_route`` handler, or ``app.post("/tool")(self.tool)`` as in NeMo Gym);
* a body declared as JSON (``application/json`` or ``+json``) that parses and validates.

The body is validated by the route's own FastAPI field (same rules, same coercions) and the result serialised by
FastAPI's own ``serialize_response`` with the route's settings. Anything else, including every request that fails
to parse or validate, goes through the full FastAPI app with the body replayed, so error answers (422 with the field
path, 400 for bad JSON) are FastAPI's own, unchanged. Exceptions raised by a handler go to the app's registered
exception handlers exactly as Starlette would route them (the ``Exception``/500 handler stays with the outermost
server-error middleware).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute, serialize_response
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gymfleet.server.limits import replay_body

__all__ = ["FastJSONRouteMiddleware"]

_JSON_SUBTYPE = b"json"


class _Plain:
    """One route answered in the fast lane."""

    __slots__ = ("call", "default_response", "field", "param", "request_param", "response_class", "route",
                 "serialize_kwargs", "status_code")

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        self.route = route
        self.call: Callable[..., Awaitable[Any]] = dependant.call  # type: ignore[assignment]
        self.field = dependant.body_params[0]
        self.param = self.field.name
        self.request_param = dependant.request_param_name
        self.status_code = route.status_code
        self.response_class = route.response_class
        self.default_response = isinstance(route.response_class, DefaultPlaceholder)
        self.serialize_kwargs = {
            "field": route.response_field,
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
            "is_coroutine": True,
            "dump_json": route.response_field is not None and self.default_response,
        }


def _is_plain(route: Any) -> bool:
    if not isinstance(route, APIRoute) or route.methods != {"POST"} or route.param_convertors:
        return False
    d = route.dependant
    if (d.dependencies or d.query_params or d.header_params or d.cookie_params or d.path_params
            or d.background_tasks_param_name or d.response_param_name or d.websocket_param_name
            or d.http_connection_param_name or d.security_scopes_param_name or len(d.body_params) != 1):
        return False
    if getattr(route, "is_json_stream", False) or getattr(route, "is_sse_stream", False):
        return False
    if getattr(route, "max_body_size", None) is not None or getattr(route, "dependencies", None):
        return False
    if getattr(d.body_params[0].field_info, "embed", False) or type(d.body_params[0].field_info).__name__ != "Body":
        return False  # Form/File bodies, or an embedded body
    return inspect.iscoroutinefunction(d.call)


def _shadowed(path: str, earlier: list[Any]) -> bool:
    """Could Starlette route a POST to ``path`` to one of the ``earlier`` routes (it takes the first full match)?"""
    for route in earlier:
        regex = getattr(route, "path_regex", None)
        if regex is None:
            return True  # a Host or a custom route: we cannot tell, so FastAPI decides
        methods = getattr(route, "methods", None)
        if regex.match(path) and (methods is None or "POST" in methods):
            return True
    return False


def _is_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            main, _, sub = media.partition(b"/")
            return main == b"application" and (sub == _JSON_SUBTYPE or sub.endswith(b"+json"))
    return False


def _lookup_handler(handlers: dict[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Any] | None:
    """Starlette's ExceptionMiddleware rules: a status-code handler for an HTTPException, then the nearest class
    in the exception's MRO; ``Exception`` and ``500`` belong to the outermost server-error middleware."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception or cls is BaseException:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class FastJSONRouteMiddleware:
    """Innermost middleware of a gymfleet app: answer plain JSON POST routes without FastAPI's routing stack."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answered = 0  # requests answered in the fast lane (the rest went through the full app)
        self._routes: dict[str, _Plain] = {}
        self._built_for: int = -1

    def _table(self, fastapi_app: Any) -> dict[str, _Plain]:
        routes = fastapi_app.router.routes
        if len(routes) != self._built_for:  # routes are added after the middleware is installed: build lazily
            table: dict[str, _Plain] = {}
            for index, route in enumerate(routes):
                if _is_plain(route) and route.path not in table and not _shadowed(route.path, routes[:index]):
                    table[route.path] = _Plain(route)
            self._routes = table
            self._built_for = len(routes)
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        fastapi_app = scope.get("app")
        plain = self._table(fastapi_app).get(scope["path"]) if fastapi_app is not None else None
        if plain is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return  # the client left mid-body: nobody to answer, nothing for the handler to do
        replay = replay_body(body, receive)
        try:
            value, errors = plain.field.validate(orjson.loads(body), {}, loc=("body",)) if body else (None, True)
        except orjson.JSONDecodeError:
            errors = True
        if errors:  # FastAPI writes the 400/422 answer: its own format, byte for byte
            await self.app(scope, replay, send)
            return
        self.answered += 1
        scope["route"] = plain.route
        scope["endpoint"] = plain.call
        scope.setdefault("path_params", {})
        kwargs: dict[str, Any] = {plain.param: value}
        request = None
        if plain.request_param:
            request = Request(scope, replay)
            request._body = body  # the body was read here; handlers that read it again get the same bytes
            kwargs[plain.request_param] = request
        try:
            response = await self._respond(plain, await plain.call(**kwargs))
        except Exception as exc:
            handler = _lookup_handler(fastapi_app.exception_handlers, exc)
            if handler is None:
                raise
            request = request or Request(scope, replay)
            if is_async_callable(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, replay, send)

    async def _respond(self, plain: _Plain, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        content = await serialize_response(response_content=result, **plain.serialize_kwargs)
        args = {"status_code": plain.status_code} if plain.status_code else {}
        if plain.serialize_kwargs["dump_json"]:
            return Response(content=content, media_type="application/json", **args)
        response_class = plain.response_class.value if plain.default_response else plain.response_class
        return (response_class or JSONResponse)(content, **args)


async def _read(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
