"""Thin route layer: typed handlers in, JSON out. Server logic never sees HTTP.

A handler is an ``async def handler(body: SomeModel) -> SomeModel | dict`` (bound method). Handlers that take a
``cookies: Cookies`` parameter receive the request's cookies and may add cookies to send back (an agent forwards the
cookies of the servers it calls, so one rollout keeps one session on each of them).
"""

from __future__ import annotations

import inspect
import json as _stdjson
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

__all__ = ["Cookies", "add_json_route", "json_response"]


class Cookies(dict[str, str]):
    """Cookies of the incoming request; keys set or changed by the handler are sent back as Set-Cookie."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        super().__init__(initial or {})
        self._initial = dict(self)

    def changed(self) -> dict[str, str]:
        return {k: v for k, v in self.items() if self._initial.get(k) != v}


def json_response(result: Any, status: int = 200) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, BaseModel):
        content = result.__pydantic_serializer__.to_json(result)
    else:
        try:
            content = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # e.g. an integer past 64 bits echoed from a request: the stdlib writes it (no 500)
            content = _stdjson.dumps(result, default=str).encode()
    return Response(content, status_code=status, media_type="application/json")


def add_json_route(
    app: FastAPI,
    path: str,
    handler: Callable[..., Awaitable[Any]],
    *,
    methods: Sequence[str] = ("POST",),
    summary: str | None = None,
) -> None:
    """Register ``handler`` at ``path``: FastAPI validates the body from the handler's first parameter's
    annotation (422 with the field path on bad input); the result is serialised with orjson/pydantic-core."""
    sig = inspect.signature(handler)
    hints = typing.get_type_hints(handler)  # resolve string annotations in the handler's own module
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
    wants_cookies = "cookies" in sig.parameters
    body_params = [p for p in params if p.name != "cookies"]
    endpoint_params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    if body_params:
        body = body_params[0]
        endpoint_params.append(
            inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=body.annotation)
        )

    async def endpoint(request: Request, body: Any = None) -> Response:
        kwargs: dict[str, Any] = {}
        cookies = None
        if wants_cookies:
            cookies = Cookies(dict(request.cookies))
            kwargs["cookies"] = cookies
        result = await (handler(body, **kwargs) if body_params else handler(**kwargs))
        response = json_response(result)
        if cookies is not None:
            for key, value in cookies.changed().items():
                response.set_cookie(key, value, httponly=True, samesite="lax")
        return response

    endpoint.__signature__ = inspect.Signature(endpoint_params)  # type: ignore[attr-defined]
    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    endpoint.__doc__ = handler.__doc__
    app.add_api_route(path, endpoint, methods=list(methods), response_model=None, summary=summary)
