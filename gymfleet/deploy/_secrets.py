"""Keep secret values out of generated files: each becomes an ``${oc.env:GYMFLEET_SECRET_...}`` reference.

A value is secret when its key names a secret (``api_key``, ``token``, ``password``, ... as
:func:`gymfleet.config.is_secret_key` decides), when it comes from env.yaml (the local secrets file), or
when a secret key refers to it with a plain ``${other.key}``. The generated config refers to an
environment variable instead, and each template fills that variable from a secret store (a Kubernetes
Secret, a Compose secret file, an env file readable only by the Slurm user)."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gymfleet.config import is_secret_key

__all__ = ["SECRET_ENV_PREFIX", "SecretRef", "scrub_secrets", "secret_envs_of"]

SECRET_ENV_PREFIX = "GYMFLEET_SECRET_"
_PLAIN_REF = re.compile(r"^\$\{([A-Za-z_][\w.-]*)\}$")  # ${a.b.c}: a reference, not a resolver call
_ENV_CHARS = re.compile(r"[^A-Z0-9]+")
_SKIP_ENV_YAML_KEYS = frozenset({"config_paths"})
_ENV_REF = re.compile(r"\$\{oc\.env:(GYMFLEET_SECRET_[A-Z0-9_]+)\}")
_ANY_REF = re.compile(r"\$\{([A-Za-z_][\w.-]*)\}")
_MIN_VALUE_LEN = 4  # shorter values are not searched for in the output (too many false hits)


@dataclass(frozen=True)
class SecretRef:
    """One secret the deployment needs: the config key it was at and the env var that now carries it."""

    path: str  # dotted key path in the config, e.g. "policy_model.responses_api_models.openai_model.api_key"
    env: str  # e.g. "GYMFLEET_SECRET_POLICY_MODEL__RESPONSES_API_MODELS__OPENAI_MODEL__API_KEY"

    @property
    def file_name(self) -> str:
        """A file name for the secret (Compose secret files, Kubernetes Secret keys)."""
        return self.env.lower()


def env_name(path: list[str]) -> str:
    return SECRET_ENV_PREFIX + "__".join(_ENV_CHARS.sub("_", part.upper()).strip("_") or "X" for part in path)


def _get(tree: Any, path: list[str]) -> Any:
    node = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _leaves(tree: Any, prefix: list[str]) -> list[tuple[list[str], Any]]:
    if isinstance(tree, Mapping):
        out: list[tuple[list[str], Any]] = []
        for key, value in tree.items():
            out.extend(_leaves(value, [*prefix, str(key)]))
        return out
    if isinstance(tree, list):
        out = []
        for i, value in enumerate(tree):
            out.extend(_leaves(value, [*prefix, str(i)]))
        return out
    return [(prefix, tree)]


def _set(tree: Any, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def _is_secret_path(path: list[str]) -> bool:
    return any(is_secret_key(part) for part in path if not part.isdigit())


def scrub_secrets(
    config: Mapping[str, Any], env_yaml_values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[SecretRef], list[str]]:
    """Replace every secret value in ``config`` with an env reference.

    Returns:
        The scrubbed copy, the secrets it now needs (sorted by env name), and the original values (to check
        that no generated file contains them).
    """
    out = copy.deepcopy(dict(config))
    targets: dict[tuple[str, ...], None] = {}
    for path, value in _leaves(out, []):
        if isinstance(value, str) and value and _is_secret_path(path):
            targets[tuple(path)] = None
    for path, _value in _leaves(dict(env_yaml_values), []):
        if path and path[0] not in _SKIP_ENV_YAML_KEYS and isinstance(_get(out, path), str | int | float):
            targets[tuple(path)] = None
    # A secret key whose value is ${other.key}: the other key holds the secret.
    pending = list(targets)
    while pending:
        path = pending.pop()
        value = _get(out, list(path))
        match = _PLAIN_REF.match(value) if isinstance(value, str) else None
        if match:
            target = tuple(match.group(1).split("."))
            if target not in targets and _get(out, list(target)) is not None:
                targets[target] = None
                pending.append(target)
    refs: list[SecretRef] = []
    values: list[str] = []
    for path in sorted(targets):
        value = _get(out, list(path))
        if isinstance(value, Mapping | list) or value is None or value == "":
            continue
        if isinstance(value, str) and "${" in value:
            if _PLAIN_REF.match(value) or "oc.env:" in value:
                continue  # a reference: its target is handled on its own; an env ref is already safe
        ref = SecretRef(".".join(path), env_name(list(path)))
        if isinstance(value, str) and len(value) >= _MIN_VALUE_LEN:
            values.append(value)
        _set(out, list(path), "${oc.env:" + ref.env + "}")
        refs.append(ref)
    refs.sort(key=lambda r: r.env)
    return out, refs, values


def secret_envs_of(config: Mapping[str, Any], subtree: Any) -> tuple[str, ...]:
    """The secret env vars the values in ``subtree`` need, following plain ``${a.b}`` references."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = [value for _path, value in _leaves(subtree, [])]
    while stack:
        value = stack.pop()
        if not isinstance(value, str):
            continue
        found.update(_ENV_REF.findall(value))
        for ref in _ANY_REF.findall(value):
            if ref not in seen:
                seen.add(ref)
                stack.extend(v for _p, v in _leaves(_get(config, ref.split(".")), []))
    return tuple(sorted(found))
