"""Server instances in a config: finding them, typing them, validating them, and their refs.

An instance is a top-level key shaped ``<name>: {<server_type>: {<impl>: {entrypoint: ..., ...}}}``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from gymfleet.errors import (
    ConfigInterpolationError,
    InvalidServerConfigError,
    ServerRefNotFoundError,
)

from ._models import (
    DOMAINS,
    RESERVED_KEYS,
    SERVER_TYPES,
    ServerInstanceConfig,
    ServerRef,
    coerce_port,
    server_type_noun,
)
from ._tree import format_path

logger = logging.getLogger("gymfleet.config")


class ServerRefTypeMismatchError(ServerRefNotFoundError):
    """A ``{type, name}`` ref names an instance that exists but has another server type."""


@dataclass(frozen=True)
class ServerInstance:
    """One configured server, typed.

    Attributes:
        name: the top-level instance name, e.g. ``"example_single_tool_call"``.
        server_type: one of ``SERVER_TYPES``.
        impl: the implementation (directory) name, e.g. ``"simple_agent"``.
        block: the impl block as plain Python, interpolations resolved against the whole config.
    """

    name: str
    server_type: str
    impl: str
    block: dict[str, Any]

    @property
    def entrypoint(self) -> str:
        return str(self.block["entrypoint"])

    @property
    def host(self) -> str | None:
        host = self.block.get("host")
        return str(host) if host else None

    @property
    def port(self) -> int | None:
        return coerce_port(self.block.get("port"))

    @property
    def key_path(self) -> str:
        """Dotted path of the impl block in the config, e.g. ``"x.resources_servers.my_impl"``."""
        return f"{self.name}.{self.server_type}.{self.impl}"

    @property
    def config(self) -> ServerInstanceConfig:
        """The block validated as :class:`ServerInstanceConfig` (raises pydantic's error)."""
        return ServerInstanceConfig.model_validate(self.block)


# ------------------------------------------------------------------------------------- locating
def _as_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
    return dict(cfg)


def _as_dictconfig(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))


def _entrypoint_location(name: str, value: Mapping[str, Any]) -> str | None:
    """Where an ``entrypoint`` sits in the first two levels below a top-level value, if anywhere."""
    if "entrypoint" in value:
        return name
    for key, inner in value.items():
        if not isinstance(inner, Mapping):
            continue
        if "entrypoint" in inner:
            return f"{name}.{key}"
        for impl, block in inner.items():
            if isinstance(block, Mapping) and "entrypoint" in block:
                return f"{name}.{key}.{impl}"
    return None


def locate_instance(name: str, value: Any) -> tuple[str, str] | None:
    """``(server_type, impl)`` when ``value`` is a server instance, None when it is not server-like.

    Raises:
        InvalidServerConfigError: ``value`` looks almost like a server but is malformed.
    """
    if name in RESERVED_KEYS or not isinstance(value, Mapping):
        return None
    type_keys = [k for k in value if k in SERVER_TYPES]
    entry_at = None if type_keys else _entrypoint_location(name, value)
    if not type_keys and entry_at is None:
        return None
    if not type_keys:
        close = [
            match
            for key in value
            for match in difflib.get_close_matches(str(key), SERVER_TYPES, n=1, cutoff=0.6)
        ]
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidServerConfigError(
            f"Top-level key '{name}' looks like a server instance (there is an 'entrypoint' at "
            f"'{entry_at}.entrypoint'), but it is not shaped '<name>: <server_type>: <impl>: "
            f"{{entrypoint: ...}}' with a server type of: {', '.join(SERVER_TYPES)}.{hint}",
            server_name=name,
            key=entry_at,
        )
    if len(value) != 1:
        raise InvalidServerConfigError(
            f"Server instance '{name}' must have exactly one server-type key, found "
            f"{[str(k) for k in value]}. Give each server its own top-level name, and move other "
            f"settings into the impl block '{name}.{type_keys[0]}.<impl>'.",
            server_name=name,
            key=name,
        )
    server_type = type_keys[0]
    impls = value[server_type]
    where = f"{name}.{server_type}"
    if not isinstance(impls, Mapping) or len(impls) != 1:
        found = list(impls) if isinstance(impls, Mapping) else type(impls).__name__
        raise InvalidServerConfigError(
            f"'{where}' must hold exactly one impl block, e.g. "
            f"'{where}: {{my_impl: {{entrypoint: app.py}}}}', "
            f"but found {found}. Split several impls into separate top-level instances.",
            server_name=name,
            key=where,
        )
    impl = str(next(iter(impls)))
    block = impls[impl]
    if not isinstance(block, Mapping) or "entrypoint" not in block:
        raise InvalidServerConfigError(
            f"{server_type_noun(server_type).capitalize()} '{name}' has no 'entrypoint' at '{where}.{impl}'. "
            "Add the script or module to run, e.g. 'entrypoint: app.py'.",
            server_name=name,
            key=f"{where}.{impl}.entrypoint",
        )
    return server_type, impl


def locate_instances(cfg: DictConfig | Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, server_type, impl)`` of every instance, in config order, without resolving anything."""
    out: list[tuple[str, str, str]] = []
    for name, value in _as_plain(cfg).items():
        found = locate_instance(str(name), value)
        if found is not None:
            out.append((str(name), *found))
    return out


def _resolved_block(cfg: DictConfig, name: str, server_type: str, impl: str) -> dict[str, Any]:
    try:
        node = cfg[name][server_type][impl]
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or f"{name}.{server_type}.{impl}"
        raise ConfigInterpolationError(
            f"Config value '{key}' of server '{name}' cannot be resolved: {getattr(exc, 'msg', exc)}. "
            "Define the referenced key (e.g. in env.yaml or with ++key=value) or set the "
            "environment variable.",
            key=str(key),
        ) from exc


def iter_instances(cfg: DictConfig | Mapping[str, Any]) -> list[ServerInstance]:
    """Every server instance in config order; reserved keys and non-server values are skipped.

    Raises:
        InvalidServerConfigError: a top-level value looks almost like a server but is malformed.
        ConfigInterpolationError: an instance block has an interpolation that does not resolve.
    """
    located = locate_instances(cfg)
    if not located:
        return []
    oc = _as_dictconfig(cfg)
    return [ServerInstance(n, t, i, _resolved_block(oc, n, t, i)) for n, t, i in located]


def _suggest(name: str, candidates: list[str]) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)


def _did_you_mean(suggestions: list[str]) -> str:
    if not suggestions:
        return ""
    return " Did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?"


def get_instance(cfg: DictConfig | Mapping[str, Any], name: str) -> ServerInstance:
    """The instance called ``name`` (only its block is resolved).

    Raises:
        ServerRefNotFoundError: no instance has that name (with "Did you mean" suggestions).
    """
    located = locate_instances(cfg)
    for inst_name, server_type, impl in located:
        if inst_name == name:
            block = _resolved_block(_as_dictconfig(cfg), name, server_type, impl)
            return ServerInstance(name, server_type, impl, block)
    names = [n for n, _, _ in located]
    suggestions = _suggest(name, names)
    known = ", ".join(f"'{n}'" for n in names) or "none"
    raise ServerRefNotFoundError(
        f"No server instance named '{name}' in the config.{_did_you_mean(suggestions)} "
        f"Configured instances: {known}.",
        server_name=name,
        suggestions=suggestions,
    )


# ------------------------------------------------------------------------------------- validation
def validate_instance(inst: ServerInstance, *, require_domain: bool = True) -> ServerInstanceConfig:
    """Validate one instance's resolved block with :class:`ServerInstanceConfig` plus the type rules.

    Raises:
        InvalidServerConfigError: naming the instance, the key path and the fix (all problems at once).
    """
    problems: list[tuple[str, str]] = []
    model: ServerInstanceConfig | None = None
    try:
        model = ServerInstanceConfig.model_validate(inst.block)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(_describe(inst, err))
    entry = inst.block.get("entrypoint")
    if isinstance(entry, str) and (
        PurePosixPath(entry).is_absolute() or PureWindowsPath(entry).is_absolute()
    ):
        problems.append(
            (
                f"{inst.key_path}.entrypoint",
                f"'entrypoint' must be relative to the server directory '{inst.server_type}/{inst.impl}/', "
                f"got the absolute path '{entry}'; write e.g. 'entrypoint: app.py'",
            )
        )
    if require_domain and inst.server_type == "resources_servers" and inst.block.get("domain") in (None, ""):
        problems.append(
            (
                f"{inst.key_path}.domain",
                f"resources server '{inst.name}' needs a 'domain' (one of: {', '.join(DOMAINS)}); "
                f"add e.g. 'domain: agent' under '{inst.key_path}'",
            )
        )
    if problems:
        lines = "\n".join(f"  - {key}: {what}" for key, what in problems)
        raise InvalidServerConfigError(
            f"Invalid config for {server_type_noun(inst.server_type)} '{inst.name}':\n{lines}",
            server_name=inst.name,
            key=problems[0][0],
        )
    assert model is not None
    return model


def _describe(inst: ServerInstance, err: Mapping[str, Any]) -> tuple[str, str]:
    loc = list(err.get("loc", ()))
    key = inst.key_path + ("." + format_path(loc) if loc else "")
    field = str(loc[0]) if loc else ""
    given = err.get("input")
    if err.get("type") == "missing":
        return key, f"'{format_path(loc)}' is required but missing; add it under '{inst.key_path}'"
    if field == "domain":
        return key, f"domain {given!r} is not known; use one of: {', '.join(DOMAINS)}"
    if field == "port":
        return (
            key,
            f"{err['msg']} (got {given!r}); use 0-65535, or leave it out to let the OS choose a free port",
        )
    if field == "datasets":
        return key, (
            f"{err['msg']} (got {given!r}); a dataset needs name, type (train|validation|example|benchmark) "
            "and jsonl_fpath, and num_repeats >= 1"
        )
    return key, f"{err['msg']} (got {given!r})"


# ------------------------------------------------------------------------------------- refs
def _iter_refs(node: Any, prefix: list[Any]) -> Iterator[tuple[list[Any], ServerRef]]:
    if isinstance(node, Mapping):
        if set(node) == {"type", "name"} and node["type"] in SERVER_TYPES and isinstance(node["name"], str):
            yield prefix, ServerRef(type=node["type"], name=node["name"])
            return
        for key, value in node.items():
            yield from _iter_refs(value, [*prefix, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _iter_refs(value, [*prefix, index])


def find_server_refs(block: Mapping[str, Any]) -> list[ServerRef]:
    """Every ``{type: <server_type>, name: <str>}`` value in ``block``, recursively, in order."""
    return [ref for _, ref in _iter_refs(block, [])]


def unresolved_refs(cfg: DictConfig | Mapping[str, Any]) -> list[tuple[str, ServerRef]]:
    """``(referencing instance, ref)`` for every ref whose target instance is not in ``cfg``."""
    instances = iter_instances(cfg)
    names = {inst.name for inst in instances}
    return [
        (inst.name, ref)
        for inst in instances
        for ref in find_server_refs(inst.block)
        if ref.name not in names
    ]


def check_refs(instances: list[ServerInstance], *, strict: bool) -> None:
    """Check every ref: absent targets raise (strict) or warn; a type mismatch always raises."""
    types = {inst.name: inst.server_type for inst in instances}
    for inst in instances:
        for path, ref in _iter_refs(inst.block, []):
            key = f"{inst.key_path}.{format_path(path)}"
            target_type = types.get(ref.name)
            if target_type == ref.type:
                continue
            if target_type is not None:
                raise ServerRefTypeMismatchError(
                    f"Server '{inst.name}' (key '{key}') refers to {ref.type} '{ref.name}', but '{ref.name}' "
                    f"is a {target_type} instance. Fix 'type' to '{target_type}' or point 'name' at a "
                    f"{ref.type} instance.",
                    server_name=ref.name,
                )
            same_type = [n for n, t in types.items() if t == ref.type]
            suggestions = _suggest(ref.name, same_type) or _suggest(ref.name, list(types))
            message = (
                f"Server '{inst.name}' (key '{key}') refers to {server_type_noun(ref.type)} '{ref.name}', "
                f"which is not defined in this config.{_did_you_mean(suggestions)}"
            )
            if strict:
                raise ServerRefNotFoundError(
                    message + " Define it (e.g. add its config file to config_paths) or fix the name.",
                    server_name=ref.name,
                    suggestions=suggestions,
                )
            logger.warning(
                "%s It must be registered with the head server by another node at run time.", message
            )
