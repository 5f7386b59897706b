"""simple_agent: the multi-step tool loop. model -> tool calls -> resources server -> model ... -> verify.

``/v1/responses`` runs the episode; ``/run`` seeds a session on the resources server, runs the episode (calling its own
handler directly, not itself over HTTP) and verifies it. Cookies of the model and resources servers are carried
through every call, so one rollout keeps one session on each.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gymfleet.server import BaseResponsesAPIAgentConfig, Cookies, SimpleResponsesAPIAgent
from gymfleet.wire import AggregateMetricsRequest, BaseRunRequest, ResponseCreateParams

logger = logging.getLogger("gymfleet.agents.simple_agent")

HARD_STEP_CAP = 128  # even with max_steps unset, an episode that never ends is cut off



class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    resources_server: dict[str, str]
    model_server: dict[str, str]
    max_steps: int | None = None


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return total
    if total is None:
        return orjson.loads(orjson.dumps(usage))
    for key, value in usage.items():
        if isinstance(value, (int, float)) and isinstance(total.get(key), (int, float)):
            total[key] += value
        elif isinstance(value, dict) and isinstance(total.get(key), dict):
            _add_usage(total[key], value)
    return total


class SimpleAgent(SimpleResponsesAPIAgent):
    config: SimpleAgentConfig

    async def responses(self, body: ResponseCreateParams, cookies: Cookies) -> dict[str, Any]:
        model = self.config.model_server["name"]
        resources = self.config.resources_server["name"]
        params = body.model_dump(mode="json", exclude_unset=True)
        original = params["input"]
        if isinstance(original, str):
            original = [{"role": "user", "content": original}]
        new_outputs: list[dict[str, Any]] = []
        usage: dict[str, Any] | None = None
        last: dict[str, Any] = {}
        max_steps = self.config.max_steps or HARD_STEP_CAP
        for step in range(1, max_steps + 1):
            resp = await self.server_client.post(
                server_name=model,
                url_path="/v1/responses",
                json={**params, "input": original + new_outputs},
                cookies=cookies,
            )
            resp.raise_for_status()  # a broken model fails the rollout (typed), never scores it 0
            cookies.update(resp.cookies)
            last = resp.json_sync()
            outputs = last.get("output") or []
            new_outputs.extend(outputs)
            usage = _add_usage(usage, last.get("usage"))
            if last.get("incomplete_details"):
                break
            calls = [o for o in outputs if o.get("type") == "function_call"]
            if not calls:
                if any(o.get("type") == "message" for o in outputs):
                    break
                continue  # reasoning-only turn: let the model continue
            for call in calls:
                new_outputs.append(await self._call_tool(resources, call, cookies))
            if step == max_steps and self.config.max_steps is None:
                logger.warning("episode hit the hard cap of %d steps; set max_steps to bound it", HARD_STEP_CAP)
        return {**last, "output": new_outputs, "usage": usage}

    async def _call_tool(self, resources: str, call: dict[str, Any], cookies: Cookies) -> dict[str, Any]:
        try:
            args = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            output = orjson.dumps({"error": f"Invalid tool call arguments: {exc!r}"}).decode()
        else:
            resp = await self.server_client.post(
                server_name=resources, url_path=f"/{call['name']}", json=args, cookies=cookies
            )
            cookies.update(resp.cookies)
            output = resp.content.decode("utf-8", errors="replace")  # the tool's answer, whatever its status
        return {"type": "function_call_output", "call_id": call.get("call_id"), "output": output}

    async def run(self, body: BaseRunRequest, cookies: Cookies) -> Any:
        resources = self.config.resources_server["name"]
        run_body = body.model_dump(mode="json")
        seed = await self.server_client.post(
            server_name=resources, url_path="/seed_session", json=run_body, cookies=cookies
        )
        seed.raise_for_status()
        cookies.update(seed.cookies)
        response = await self.responses(body.responses_create_params, cookies)
        if self.config.skip_verification:
            return {
                **run_body,
                "response": response,
                "reward": self.config.skip_verification_reward,
                "verification_skipped": True,
            }
        verify = await self.server_client.post(
            server_name=resources, url_path="/verify", json={**run_body, "response": response}, cookies=cookies
        )
        verify.raise_for_status()
        cookies.update(verify.cookies)
        return verify.json_sync()

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> Any:
        resp = await self.server_client.post(
            server_name=self.config.resources_server["name"], url_path="/aggregate_metrics", json=body
        )
        resp.raise_for_status()
        return resp.json_sync()


if __name__ == "__main__":
    SimpleAgent.run_webserver()
