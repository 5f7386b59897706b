"""Constants and typed (pydantic v2) models of the config: head server, server refs, instances."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

SERVER_TYPES: tuple[str, ...] = ("resources_servers", "responses_api_agents", "responses_api_models")
ServerType = Literal["resources_servers", "responses_api_agents", "responses_api_models"]

DEFAULT_HEAD_HOST = "127.0.0.1"
DEFAULT_HEAD_PORT = 11000

CONFIG_FILE_ENV = "GYMFLEET_CONFIG_FILE"
CONFIG_DICT_ENV = "NEMO_GYM_CONFIG_DICT"
CONFIG_PATH_ENV = "NEMO_GYM_CONFIG_PATH"
EXTRA_ROOTS_ENVS: tuple[str, ...] = ("GYMFLEET_EXTRA_ROOTS", "NEMO_GYM_EXTRA_ROOTS")

# Top-level keys that are never server instances, whatever their value.
RESERVED_KEYS: frozenset[str] = frozenset({"head_server", "config_paths", "default_host", "dry_run"})

Domain = Literal[
    "math",
    "coding",
    "agent",
    "knowledge",
    "instruction_following",
    "long_context",
    "safety",
    "games",
    "translation",
    "e2e",
    "rlhf",
    "other",
]
DOMAINS: tuple[str, ...] = get_args(Domain)  # one list: the Literal is the source

# Human-readable singular of each server type, for messages.
SERVER_TYPE_NOUNS: dict[str, str] = {
    "resources_servers": "resources server",
    "responses_api_agents": "agent server",
    "responses_api_models": "model server",
}


class HeadServerConfig(BaseModel):
    """Where the head server listens (``head_server:`` in the config)."""

    model_config = ConfigDict(extra="allow")

    host: str = DEFAULT_HEAD_HOST
    port: int = Field(default=DEFAULT_HEAD_PORT, ge=0, le=65535)


class ServerRef(BaseModel):
    """A reference from one server's config to another instance: ``{type: ..., name: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ServerType
    name: str


class DatasetConfig(BaseModel):
    """One entry of a server's ``datasets:`` list."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: Literal["train", "validation", "example", "benchmark"]
    jsonl_fpath: str
    num_repeats: int = Field(default=1, ge=1)
    license: str | None = None


class ServerInstanceConfig(BaseModel):
    """The impl block of one server instance (``<instance>.<server_type>.<impl>``).

    Impl-specific fields are allowed here and validated later by the impl's own config class.
    ``domain`` is required for resources servers; that rule depends on the server type, so it is
    checked by the instance validation, not by this model.
    """

    model_config = ConfigDict(extra="allow")

    entrypoint: str = Field(min_length=1)
    host: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    num_workers: int | None = Field(default=None, ge=1)
    domain: Domain | None = None
    datasets: list[DatasetConfig] | None = None
    name: str | None = None


def server_type_noun(server_type: str) -> str:
    return SERVER_TYPE_NOUNS.get(server_type, server_type)


def coerce_port(value: Any) -> int | None:
    """Port from a (possibly string, from ``oc.env``) config value; None when unset."""
    if value is None or value == "":
        return None
    return int(value)
