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


# Nodes that aliases may add on top of the written ones: plenty for reusing blocks with anchors, far below a
# "billion laughs" document (nine nested aliases of nine: 59,049 nodes took 30 s to load).
MAX_ALIAS_EXPANSION = 10_000


def _check_alias_expansion(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases and documents whose aliases would expand past :data:`MAX_ALIAS_EXPANSION` nodes."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: documents may nest deeper than Python's recursion limit
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise MalformedConfigError(f"The YAML in '{source}' has a recursive alias (an anchor used inside "
                                       "itself); configs must be trees.", path=source)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    if sizes[id(root)] - len(sizes) > MAX_ALIAS_EXPANSION:
        raise MalformedConfigError(
            f"The YAML aliases in '{source}' expand to {sizes[id(root)]} nodes from {len(sizes)} written ones "
            f"(more than {MAX_ALIAS_EXPANSION} added); write the blocks out or use ${{copy:...}} instead.",
            path=source,
        )


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; ``source`` names where it came from (a path or an env var) in errors."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_alias_expansion(node, source)
        return loader.construct_document(node)
    except ValueError as exc:  # e.g. an integer past Python's 4300-digit conversion limit
        raise MalformedConfigError(f"The YAML in '{source}' has a value that cannot be read: {exc}",
                                   path=source) from exc
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
    finally:
        loader.dispose()


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
