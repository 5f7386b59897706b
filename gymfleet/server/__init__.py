"""Server base classes and runtime. Write a server by subclassing one of the ``Simple*`` classes."""

from gymfleet.server.agent import BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from gymfleet.server.base import BaseServerConfig, SimpleServer
from gymfleet.server.model import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel
from gymfleet.server.resources import BaseResourcesServerConfig, SimpleResourcesServer
from gymfleet.server.routes import Cookies
from gymfleet.server.session import current_session_id

__all__ = [
    "BaseResourcesServerConfig",
    "BaseResponsesAPIAgentConfig",
    "BaseResponsesAPIModelConfig",
    "BaseServerConfig",
    "Cookies",
    "SimpleResourcesServer",
    "SimpleResponsesAPIAgent",
    "SimpleResponsesAPIModel",
    "SimpleServer",
    "current_session_id",
]
