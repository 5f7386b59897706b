"""example_single_tool_call: one tool (get_weather) and a verifier that rewards calling it.

Reward: 1.0 when the episode called ``get_weather`` and then answered with a message, else 0.0 (the NeMo Gym example
always returned 1.0; a reward that cannot be 0 measures nothing).
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer
from gymfleet.wire import BaseVerifyRequest, BaseVerifyResponse


class ExampleSingleToolCallConfig(BaseResourcesServerConfig):
    pass


class GetWeatherRequest(BaseModel):
    city: str


class GetWeatherResponse(BaseModel):
    city: str
    weather_description: str


class ExampleSingleToolCallServer(SimpleResourcesServer):
    config: ExampleSingleToolCallConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def get_weather(self, body: GetWeatherRequest) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=f"The weather in {body.city} is cold.")

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        output = body.response.output
        called = any(item.get("type") == "function_call" and item.get("name") == "get_weather" for item in output)
        answered = any(item.get("type") == "message" for item in output)
        return BaseVerifyResponse(**body.model_dump(), reward=1.0 if called and answered else 0.0)


if __name__ == "__main__":
    ExampleSingleToolCallServer.run_webserver()
