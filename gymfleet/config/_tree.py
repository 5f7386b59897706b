"""Small helpers over plain nested dicts: dotted paths, deep merge, walking leaves.

The loader keeps the config as plain Python containers while it merges and rewrites it, and only
turns it into an OmegaConf ``DictConfig`` at the end; these helpers are the vocabulary for that.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

MISSING = "???"

_ABSENT = object()


def split_key(dotted: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "b", "c"]`` (empty parts are dropped)."""
    return [part for part in dotted.split(".") if part]


def format_path(parts: list[Any]) -> str:
    """Dotted path for humans; list indices print as ``[i]``."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def get_path(tree: Mapping[str, Any], dotted: str, default: Any = _ABSENT) -> Any:
    """Value at ``dotted`` in ``tree``; ``default`` (or ``KeyError``) when any part is absent."""
    node: Any = tree
    for part in split_key(dotted):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            if default is _ABSENT:
                raise KeyError(dotted)
            return default
    return node


def has_path(tree: Mapping[str, Any], dotted: str) -> bool:
    try:
        get_path(tree, dotted)
    except KeyError:
        return False
    return True


def set_path(tree: dict[str, Any], dotted: str, value: Any, *, merge: bool = True) -> None:
    """Set ``dotted`` to ``value``, creating (or replacing non-dict) intermediate nodes.

    With ``merge`` a dict value is deep-merged into an existing dict at that path, which is how
    Hydra applies ``++a={x: 1}`` after ``++a.y=2``.
    """
    parts = split_key(dotted)
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    last = parts[-1]
    if merge and isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = value


def delete_path(tree: dict[str, Any], dotted: str) -> bool:
    """Remove ``dotted``; returns False when it was not there."""
    parts = split_key(dotted)
    node: Any = tree
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False
    del node[parts[-1]]
    return True


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mappings left to right (later wins) into a new dict.

    Mappings merge key by key; any other value replaces what was there. A later ``???`` does not
    erase an earlier concrete value (the OmegaConf rule: "required" is not "unset it").
    """
    out: dict[str, Any] = {}
    for layer in layers:
        _merge_into(out, layer)
    return out


def _merge_into(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        current = dst.get(key, _ABSENT)
        if isinstance(value, Mapping):
            if isinstance(current, dict):
                _merge_into(current, value)
            else:
                fresh: dict[str, Any] = {}
                _merge_into(fresh, value)
                dst[key] = fresh
        elif value == MISSING and isinstance(value, str) and current is not _ABSENT:
            continue
        else:
            dst[key] = copy.deepcopy(value)


def iter_leaves(node: Any, prefix: list[Any] | None = None) -> Iterator[tuple[list[Any], Any]]:
    """Yield ``(path parts, value)`` for every non-container value, depth first, in order."""
    prefix = prefix or []
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from iter_leaves(value, [*prefix, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from iter_leaves(value, [*prefix, index])
    else:
        yield prefix, node
