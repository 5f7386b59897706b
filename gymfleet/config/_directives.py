"""Config directives that move, copy or delete subtrees after merging (NeMo Gym compatible).

* ``key: ${inherit_from:a.b}``            ``key`` becomes the subtree at ``a.b``, which is removed;
* ``key: {_inherit_from: a.b, x: 1}``     same, with the local keys merged on top;
* ``key: ${copy:a.b}`` / ``{_copy: a.b}`` the same but ``a.b`` is kept;
* ``_delete_key: "k1,k2"``                removes those keys from the mapping holding it, after the above.

Paths are dotted from the top of the config. Directive strings must be the whole value.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from omegaconf import OmegaConf

from gymfleet.errors import ConfigInterpolationError, MalformedConfigError

from ._tree import deep_merge, format_path, split_key

logger = logging.getLogger("gymfleet.config")

_DIRECTIVE_RE = re.compile(r"^\$\{\s*(inherit_from|copy)\s*:\s*([^}]*?)\s*\}$")
_EMBEDDED_RE = re.compile(r"\$\{\s*(inherit_from|copy)\s*:")
_PROPERTY_KEYS = {"_inherit_from": "inherit_from", "_copy": "copy"}


class DirectivePathNotFoundError(ConfigInterpolationError):
    """An ``inherit_from``/``copy`` directive names a path that is not in the config."""


def register_resolvers() -> None:
    """Register ``inherit_from``/``copy`` as OmegaConf resolvers that return the directive text.

    Idempotent. They only matter if someone resolves a config before :func:`apply_directives` ran;
    returning the directive unchanged keeps it intact for that pass.
    """
    for name in ("inherit_from", "copy"):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, _echo(name), replace=True)


def _echo(name: str) -> Any:
    def resolver(path: str) -> str:
        return "${" + name + ":" + str(path) + "}"

    return resolver


def apply_directives(root: dict[str, Any]) -> dict[str, Any]:
    """Apply every directive in ``root`` (in place) and return it."""
    _Applier(root).run()
    return root


def _is_directive(node: Any) -> bool:
    if isinstance(node, str):
        return _DIRECTIVE_RE.match(node) is not None
    return isinstance(node, dict) and any(k in node for k in _PROPERTY_KEYS)


class _Applier:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.active: list[str] = []

    def run(self) -> None:
        for key in list(self.root):
            if key in self.root:
                self.root[key] = self.process(self.root[key], [key])

    def process(self, node: Any, where: list[Any]) -> Any:
        if isinstance(node, str):
            match = _DIRECTIVE_RE.match(node)
            if match:
                kind, source = match.group(1), match.group(2)
                return self.fetch(source, kind, where)
            if _EMBEDDED_RE.search(node):
                raise MalformedConfigError(
                    f"Config value '{format_path(where)}' = {node!r} embeds an inherit_from/copy "
                    "directive in a longer string; a directive must be the whole value, e.g. "
                    "'key: ${copy:a.b}'.",
                    key=format_path(where),
                )
            return node
        if isinstance(node, list):
            return [self.process(item, [*where, i]) for i, item in enumerate(node)]
        if isinstance(node, dict):
            return self.process_mapping(node, where)
        return node

    def process_mapping(self, node: dict[str, Any], where: list[Any]) -> dict[str, Any]:
        present = [k for k in _PROPERTY_KEYS if k in node]
        if len(present) > 1:
            raise MalformedConfigError(
                f"Config mapping '{format_path(where)}' has both '_inherit_from' and '_copy'; use one.",
                key=format_path(where),
            )
        if present:
            directive = present[0]
            source = node.pop(directive)
            if not isinstance(source, str) or not source.strip():
                raise MalformedConfigError(
                    f"'{format_path([*where, directive])}' must be a dotted config path string, "
                    f"got {source!r}.",
                    key=format_path([*where, directive]),
                )
            base = self.fetch(source.strip(), _PROPERTY_KEYS[directive], [*where, directive])
            if not isinstance(base, dict):
                raise MalformedConfigError(
                    f"'{format_path([*where, directive])}: {source}' points at a "
                    f"{type(base).__name__}, but local keys can only be merged onto a mapping. "
                    f"Use 'key: ${{{_PROPERTY_KEYS[directive]}:{source}}}' for a non-mapping value.",
                    key=format_path(where),
                )
            node = deep_merge(base, node)
        for key in list(node):
            if key in node:
                node[key] = self.process(node[key], [*where, key])
        if "_delete_key" in node:
            self.delete_keys(node, node.pop("_delete_key"), where)
        return node

    def delete_keys(self, node: dict[str, Any], spec: Any, where: list[Any]) -> None:
        if isinstance(spec, str):
            keys = [k.strip() for k in spec.split(",") if k.strip()]
        elif isinstance(spec, list) and all(isinstance(k, str) for k in spec):
            keys = spec
        else:
            raise MalformedConfigError(
                f"'{format_path([*where, '_delete_key'])}' must be a comma-separated string of keys "
                f'(e.g. "k1,k2"), got {spec!r}.',
                key=format_path([*where, "_delete_key"]),
            )
        for key in keys:
            if node.pop(key, None) is None and key not in node:
                logger.warning(
                    "_delete_key at '%s' names '%s', which is not there; nothing deleted. "
                    "Check the spelling.",
                    format_path(where) or "<top>",
                    key,
                )

    def fetch(self, source: str, kind: str, where: list[Any]) -> Any:
        """The (directive-free) value at ``source``; removed from the tree for inherit_from."""
        parts = split_key(source)
        if not parts:
            raise MalformedConfigError(
                f"Directive at '{format_path(where)}' has an empty path; write e.g. '${{{kind}:a.b}}'.",
                key=format_path(where),
            )
        if source in self.active:
            chain = " -> ".join([*self.active, source])
            raise MalformedConfigError(
                f"inherit_from/copy directives form a cycle: {chain} (at '{format_path(where)}'). "
                "Break the cycle.",
                key=format_path(where),
            )
        self.active.append(source)
        try:
            parent: Any = self.root
            for i, part in enumerate(parts):
                if not isinstance(parent, dict) or part not in parent:
                    self._not_found(source, kind, where, parts[:i])
                if i < len(parts) - 1:
                    # A path through a copied/inherited subtree: resolve that node first. Only
                    # directive nodes, so an ancestor of the node being processed is left alone.
                    if _is_directive(parent[part]):
                        parent[part] = self.process(parent[part], parts[: i + 1])
                    parent = parent[part]
            value = self.process(parent[parts[-1]], parts)
            parent[parts[-1]] = value
            if kind == "inherit_from":
                del parent[parts[-1]]
                return value
            return copy.deepcopy(value)
        finally:
            self.active.pop()

    def _not_found(self, source: str, kind: str, where: list[Any], found: list[str]) -> None:
        hint = (
            " It may already have been moved by another inherit_from; use ${copy:...} to share a subtree."
            if kind == "inherit_from"
            else ""
        )
        base = f" ('{'.'.join(found)}' exists)" if found else ""
        raise DirectivePathNotFoundError(
            f"Config value '{format_path(where)}' uses {kind} from '{source}', which is not set after "
            f"merging{base}.{hint} Fix the path or define '{source}'.",
            key=format_path(where),
        )
