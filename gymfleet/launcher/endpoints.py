"""Wait for the upstream endpoints model servers proxy to (vLLM, an OpenAI-compatible API) before saying "ready".

A model server that starts and answers is not a working model: its ``base_url`` may point at an engine that is still
loading weights, or at nothing at all. NeMo Gym printed "All 3 / 3 servers ready" against a ``policy_base_url``
nothing served, and collection then sat at 0%. The launcher calls :func:`wait_for_model_endpoints` after its servers
answer: every value of a key ending in ``base_url`` inside a ``responses_api_models`` block (a string or a list) is
probed (``GET <url>/models`` for URLs ending in ``/v1``, else ``GET <url>``; any HTTP answer counts, a refused or
timed-out connection does not) until all answer or ``model_endpoint_readiness_timeout_seconds`` (default 600, NeMo
Gym's key; 0 or less skips the wait) passes, which fails start-up naming each silent URL and the key it came from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from gymfleet import transport
from gymfleet.errors import ClientError, ServerStartupError

__all__ = ["DEFAULT_READINESS_TIMEOUT_S", "model_endpoints", "wait_for_model_endpoints"]

logger = logging.getLogger("gymfleet.launcher")

DEFAULT_READINESS_TIMEOUT_S = 600.0
_PROBE_TIMEOUT = transport.Timeouts(connect=3.0, total=5.0)
_POLL_MAX_S = 2.0
_LOG_EVERY_S = 30.0


def model_endpoints(config: Any, names: set[str] | None = None) -> list[tuple[str, str]]:
    """``(url, "instance.server_type.impl.key")`` for every upstream URL of the model servers in ``config``.

    Args:
        config: the fleet config (a mapping or an OmegaConf DictConfig; interpolations are resolved here).
        names: only these instances (the ones this launcher runs); None for all.
    """
    found: list[tuple[str, str]] = []
    for name, value in _items(config):
        if names is not None and name not in names:
            continue
        typed = _get(value, "responses_api_models")
        for impl, block in _items(typed):
            for key, url in _items(block):
                if not str(key).endswith("base_url"):
                    continue
                urls = url if isinstance(url, (list, tuple)) else [url]
                for u in urls:
                    if isinstance(u, str) and u.strip().startswith(("http://", "https://")):
                        found.append((u.strip().rstrip("/"), f"{name}.responses_api_models.{impl}.{key}"))
    return found


def _items(value: Any) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    try:
        if hasattr(value, "_metadata"):  # OmegaConf node: resolve interpolations one level at a time
            from omegaconf import OmegaConf

            if not OmegaConf.is_dict(value):
                return []
            out = []
            for key in value:
                try:
                    out.append((key, OmegaConf.to_container(value[key], resolve=True)
                                if OmegaConf.is_config(value[key]) else value[key]))
                except Exception:  # an interpolation this node cannot resolve: not an endpoint we can probe
                    continue
            return out
        return list(value.items()) if isinstance(value, Mapping) else []
    except Exception:
        return []


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _probe_url(url: str) -> str:
    return f"{url}/models" if url.endswith("/v1") else url


async def _answers(url: str) -> bool:
    try:
        await transport.send("GET", _probe_url(url), timeout=_PROBE_TIMEOUT, retry=transport.NO_RETRY)
        return True  # any HTTP answer: something serves there (auth errors included)
    except ClientError:
        return False


async def wait_for_model_endpoints(
    config: Any, timeout_s: float = DEFAULT_READINESS_TIMEOUT_S, *, names: set[str] | None = None
) -> float:
    """Wait until every model server's upstream answers; return the seconds waited.

    Raises:
        ServerStartupError: some endpoint did not answer within ``timeout_s`` (each one named with its config key).
    """
    endpoints = model_endpoints(config, names)
    if timeout_s <= 0 or not endpoints:
        return 0.0
    start = time.monotonic()
    deadline = start + timeout_s
    pending = dict(endpoints)
    delay = 0.1
    next_log = start + 5.0
    while True:
        results = await asyncio.gather(*(_answers(url) for url in pending))
        for url, ok in zip(list(pending), results, strict=True):
            if ok:
                logger.info("model endpoint %s (from %s) answers", url, pending.pop(url))
        if not pending:
            return time.monotonic() - start
        now = time.monotonic()
        if now >= deadline:
            listed = "; ".join(f"{url} (from `{key}`)" for url, key in pending.items())
            raise ServerStartupError(
                f"Model endpoint(s) not answering after {timeout_s:.0f}s: {listed}. The model servers are up but "
                "what they proxy to is not: start the engine (vLLM, the API) or fix the URL. Raise "
                "model_endpoint_readiness_timeout_seconds for engines that load slowly (0 skips this check).",
                server_name=next(iter(pending.values())).split(".", 1)[0],
            )
        if now >= next_log:
            logger.warning("waiting for model endpoint(s) %s (%.0fs of %.0fs)", ", ".join(pending), now - start,
                           timeout_s)
            next_log = now + _LOG_EVERY_S
        await asyncio.sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 2, _POLL_MAX_S)
