"""Reading YAML (and JSON, which is YAML) into plain dicts, with errors that point at the text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gymfleet.errors import ConfigFileNotFoundError, MalformedConfigError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader that rejects duplicate keys and reads ``1e-3`` as a float (as OmegaConf does)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 only reads "1.0e-3" as a float; people write "1e-3" and mean a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; ``source`` names where it came from (a path or an env var) in errors."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise MalformedConfigError(
            f"Malformed YAML in '{source}'{where}: {problem}. Fix the YAML syntax there "
            "(check indentation, unbalanced quotes or brackets, and duplicate keys).",
            path=source,
        ) from exc
    except yaml.YAMLError as exc:
        raise MalformedConfigError(f"Malformed YAML in '{source}': {exc}", path=source) from exc


def parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text whose top level must be a mapping (an empty text is an empty mapping)."""
    data = parse_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedConfigError(
            f"The config in '{source}' must be a YAML mapping (key: value pairs) at the top level, "
            f"but it is a {type(data).__name__}. Put the settings under top-level keys, e.g. "
            "'my_server: {resources_servers: {...}}'.",
            path=source,
        )
    return data


def load_yaml_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file whose top level is a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigFileNotFoundError(
            f"Config file '{path}' does not exist. Check the path.", path=str(path)
        ) from exc
    except OSError as exc:
        raise MalformedConfigError(f"Could not read config file '{path}': {exc}", path=str(path)) from exc
    return parse_yaml_mapping(text, str(path))
