"""``load_config``: the one place that decides how config sources combine.

Precedence, lowest first (written down once, proved in tests/config/test_includes_and_precedence.py):

    config files (post-order of the include tree)  <  env.yaml  <  ``initial``  <  CLI overrides

Then: directives -> ``~key`` deletions -> ``???`` check -> interpolation check -> defaults ->
validation of every server instance -> server refs. No port is chosen here: a server without a
port keeps none, and the launcher binds port 0 and writes the real port back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from gymfleet.errors import (
    ConfigFileNotFoundError,
    ConfigInterpolationError,
    ConfigMissingValuesError,
    MalformedConfigError,
    OverrideError,
)

from ._directives import apply_directives, register_resolvers
from ._instances import check_refs, iter_instances, locate_instance, validate_instance
from ._models import DEFAULT_HEAD_HOST, HeadServerConfig
from ._overrides import parse_overrides
from ._roots import resolve_file, search_roots
from ._secrets import ENV_SECRETS_KEY, env_yaml_secret_values
from ._tree import MISSING, deep_merge, delete_path, format_path, iter_leaves, split_key
from ._yaml import load_yaml_file

logger = logging.getLogger("gymfleet.config")

_ENV_NOT_FOUND = re.compile(r"Environment variable '([^']+)' not found")


def load_config(
    overrides: Sequence[str] = (),
    *,
    initial: Mapping[str, Any] | None = None,
    roots: Sequence[str | Path] | None = None,
    load_env_yaml: bool = True,
    env_yaml_path: str | Path | None = None,
    strict_refs: bool = False,
) -> DictConfig:
    """Build the whole fleet config from files, env.yaml, programmatic defaults and CLI overrides.

    Args:
        overrides: Hydra-style tokens, e.g. ``["+config_paths=[a.yaml]", "++head_server.port=11001"]``.
        initial: programmatic defaults (e.g. from a trainer); CLI overrides beat them.
        roots: where relative paths are looked up; defaults to :func:`search_roots`.
        load_env_yaml: read ``env.yaml`` (``env_yaml_path`` or the first ``<root>/env.yaml``).
        env_yaml_path: an explicit env.yaml; it must exist.
        strict_refs: an unknown ``{type, name}`` target is an error (default: a warning, because a
            head may supply that server at run time from another node).

    Returns:
        The merged config, interpolations kept (``${...}``) so children resolve them in place.

    Raises:
        OverrideError, ConfigFileNotFoundError, MalformedConfigError, ConfigMissingValuesError,
        ConfigInterpolationError, InvalidServerConfigError, ServerRefNotFoundError.
    """
    register_resolvers()
    search = [Path(r).expanduser().resolve() for r in roots] if roots is not None else search_roots()
    cli = parse_overrides(overrides)
    if isinstance(initial, DictConfig):
        initial = OmegaConf.to_container(initial, resolve=False)  # type: ignore[assignment]
    top = deep_merge(dict(initial or {}), cli.values)
    env = _load_env_yaml(search, env_yaml_path) if load_env_yaml else {}

    paths = _config_paths(deep_merge(env, top))
    files, expanded = _load_includes(paths, search) if paths is not None else ([], [])
    merged = deep_merge(*files, env, top)
    if paths is not None:
        merged["config_paths"] = expanded

    merged = apply_directives(merged)
    for key in cli.deletions:
        if not delete_path(merged, key):
            _missing_deletion(key, merged)
    _raise_on_missing(merged)
    _record_env_secrets(merged, env)
    apply_defaults(merged)
    cfg = to_dictconfig(merged)
    _raise_on_bad_interpolations(cfg, merged)
    _validate_head_server(cfg)
    instances = iter_instances(cfg)
    for inst in instances:
        validate_instance(inst)
    check_refs(instances, strict=strict_refs)
    return cfg


# ------------------------------------------------------------------------------------- sources
def _load_env_yaml(roots: Sequence[Path], explicit: str | Path | None) -> dict[str, Any]:
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigFileNotFoundError(
                f"env.yaml file '{path}' (env_yaml_path) does not exist. Fix the path or leave it unset "
                "to use the first env.yaml found in the search roots.",
                path=str(path),
            )
        return load_yaml_file(path)
    for root in roots:
        candidate = root / "env.yaml"
        if candidate.is_file():
            logger.debug("using env.yaml at %s", candidate)
            return load_yaml_file(candidate)
    return {}


def _config_paths(source: dict[str, Any]) -> list[str] | None:
    """``config_paths`` from env.yaml + initial + CLI, interpolations resolved; None when unset."""
    if "config_paths" not in source:
        return None
    value: Any = source["config_paths"]
    if value is None:
        return []
    if (isinstance(value, str) and "${" in value) or (
        isinstance(value, list) and any(isinstance(v, str) and "${" in v for v in value)
    ):
        try:
            node = to_dictconfig(source).config_paths
        except OmegaConfBaseException as exc:
            raise ConfigInterpolationError(
                f"config_paths = {value!r} cannot be resolved: {getattr(exc, 'msg', exc)}. Define the "
                "referenced key (e.g. in env.yaml) or list the files directly.",
                key="config_paths",
            ) from exc
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedConfigError(
            f"config_paths must be a list of file paths (or one comma-separated string), got {value!r}. "
            "Example: '+config_paths=[a.yaml,b.yaml]'.",
            key="config_paths",
        )
    return value


def _load_includes(paths: list[str], roots: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Load every file, breadth first, following each file's own ``config_paths``.

    Returns the file dicts in merge order (post-order of the include tree: a file after the files
    it includes, siblings in listed order) and the expanded list of paths in load order.
    """
    # node = (path as written, resolved path, data, children node ids)
    nodes: list[tuple[str, Path, dict[str, Any], list[int]]] = []
    seen: dict[Path, str] = {}
    queue: list[tuple[str, int | None]] = [(p, None) for p in paths]
    top: list[int] = []
    head = 0
    while head < len(queue):
        written, parent = queue[head]
        head += 1
        context = f" (included by '{nodes[parent][0]}')" if parent is not None else ""
        path = resolve_file(written, roots, context=context)
        if path in seen:
            logger.warning(
                "Config file '%s'%s is already loaded (as '%s'); skipping the duplicate. To reuse a block "
                "in several places use '${inherit_from:...}' or '${copy:...}' instead of including twice.",
                written,
                context,
                seen[path],
            )
            continue
        seen[path] = written
        data = load_yaml_file(path)
        nodes.append((written, path, data, []))
        node_id = len(nodes) - 1
        (top if parent is None else nodes[parent][3]).append(node_id)
        nested = data.get("config_paths")
        if nested is not None:
            if isinstance(nested, str):
                nested = [p.strip() for p in nested.split(",") if p.strip()]
            if not isinstance(nested, list) or not all(isinstance(p, str) for p in nested):
                raise MalformedConfigError(
                    f"config_paths in '{path}' must be a list of file paths, got {nested!r}.",
                    path=str(path),
                    key="config_paths",
                )
            queue.extend((p, node_id) for p in nested)

    order: list[dict[str, Any]] = []
    # Iterative post-order: includes can nest deeply and recursion depth is not ours to spend.
    stack: list[tuple[int, bool]] = [(i, False) for i in reversed(top)]
    while stack:
        node_id, expanded_children = stack.pop()
        if expanded_children:
            order.append(nodes[node_id][2])
            continue
        stack.append((node_id, True))
        stack.extend((child, False) for child in reversed(nodes[node_id][3]))
    return order, [n[0] for n in nodes]


# ------------------------------------------------------------------------------------- checks
def _missing_deletion(key: str, merged: dict[str, Any]) -> None:
    parts = split_key(key)
    parent_hint = ""
    if len(parts) > 1:
        parent_hint = f" (under '{'.'.join(parts[:-1])}')"
    raise OverrideError(
        f"Override '~{key}' deletes '{key}', but that key is not in the merged config{parent_hint}. "
        f"Check the spelling; top-level keys are: {', '.join(map(str, merged)) or 'none'}.",
        key=key,
    )


def _raise_on_missing(merged: dict[str, Any]) -> None:
    missing = [format_path(parts) for parts, value in iter_leaves(merged) if value == MISSING]
    if not missing:
        return
    lines = "\n".join(f"  - {key}   (e.g. ++{key}=<value>)" for key in missing)
    raise ConfigMissingValuesError(
        f"{len(missing)} required config value(s) are still '???' after merging the config files, "
        f"env.yaml and overrides:\n{lines}\nSet each on the command line or in env.yaml.",
        keys=missing,
    )


def to_dictconfig(plain: dict[str, Any]) -> DictConfig:
    """OmegaConf view of a plain merged dict (MalformedConfigError if OmegaConf rejects it)."""
    try:
        return OmegaConf.create(plain)
    except OmegaConfBaseException as exc:
        raise MalformedConfigError(
            f"The merged config cannot be represented: {getattr(exc, 'msg', exc)} "
            f"(at '{getattr(exc, 'full_key', '?')}'). Use string keys and plain YAML values.",
            key=str(getattr(exc, "full_key", "") or "") or None,
        ) from exc


def _raise_on_bad_interpolations(cfg: DictConfig, plain: dict[str, Any]) -> None:
    """Resolve every interpolation once and report all that fail, each with its key."""
    problems: list[tuple[str, str]] = []
    for parts, value in iter_leaves(plain):
        if not (isinstance(value, str) and "${" in value):
            continue
        node: Any = cfg
        try:
            # The path runs through real containers (the plain walk descended into them), so only
            # the last access resolves anything.
            for part in parts:
                node = node[part]
        except OmegaConfBaseException as exc:
            problems.append((format_path(parts), _explain(exc)))
    if not problems:
        return
    lines = "\n".join(f"  - '{key}': {why}" for key, why in problems)
    raise ConfigInterpolationError(
        f"{len(problems)} config value(s) reference something that is not set after merging the config "
        f"files, env.yaml and overrides:\n{lines}\nDefine the referenced key (e.g. in env.yaml or with "
        "++key=value), set the environment variable, or give a default: ${oc.env:VAR,default}.",
        key=problems[0][0],
    )


def _explain(exc: OmegaConfBaseException) -> str:
    msg = str(getattr(exc, "msg", "") or exc).strip().splitlines()[0]
    if msg.startswith("Interpolation key '") and msg.endswith("' not found"):
        ref = msg[len("Interpolation key '") : -len("' not found")]
        return f"references '{ref}', which is not set"
    env = _ENV_NOT_FOUND.search(msg)
    if env:
        var = env.group(1)
        return f"environment variable '{var}' is not set (or give a default: ${{oc.env:{var},default}})"
    return msg


# ------------------------------------------------------------------------------------- defaults
def _record_env_secrets(merged: dict[str, Any], env: Mapping[str, Any]) -> None:
    """Keep env.yaml's secret-looking values under ``env_secret_values`` so every process masks them."""
    values = env_yaml_secret_values(env)
    if not values:
        return
    existing = merged.get(ENV_SECRETS_KEY)
    if isinstance(existing, list):
        values = sorted(set(values) | {v for v in existing if isinstance(v, str)})
    merged[ENV_SECRETS_KEY] = values


def apply_defaults(merged: dict[str, Any]) -> None:
    """Write the defaults a config may lack: head_server (or its missing fields), dry_run, and
    ``default_host`` (127.0.0.1) as the host of every server block without one. Never a port."""
    default_host = merged.get("default_host") or DEFAULT_HEAD_HOST
    head = merged.get("head_server")
    if head is None or head == {}:
        merged["head_server"] = {"host": default_host, "port": HeadServerConfig.model_fields["port"].default}
    elif isinstance(head, dict):
        # A partial block gets the missing field, instead of failing validation later.
        if not head.get("host"):
            head["host"] = default_host
        if head.get("port") is None:
            head["port"] = HeadServerConfig.model_fields["port"].default
    merged.setdefault("dry_run", False)
    for name, value in merged.items():
        located = locate_instance(str(name), value)
        if located is not None:
            block = value[located[0]][located[1]]
            if not block.get("host"):
                block["host"] = default_host


def _validate_head_server(cfg: DictConfig) -> None:
    try:
        head = (
            OmegaConf.to_container(cfg.head_server, resolve=True)
            if isinstance(cfg.head_server, DictConfig)
            else cfg.head_server
        )
        HeadServerConfig.model_validate(head)
    except ValidationError as exc:
        problems = "; ".join(
            f"head_server.{format_path(list(e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise MalformedConfigError(
            f"Invalid head_server block: {problems}. It needs 'host' (an address) and 'port' (0-65535), "
            "e.g. 'head_server: {host: 127.0.0.1, port: 11000}'.",
            key="head_server",
        ) from exc
