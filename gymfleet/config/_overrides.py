"""Command-line overrides in Hydra's grammar, turned into a plain dict plus a list of deletions.

NeMo Gym applies overrides to an *empty* primary config and merges the result over the files; we
do the same without running Hydra's app machinery (no ``hydra.main``, no ``outputs/`` dirs):

* ``+k=v``   add ``k`` (an error if the command line already set ``k``);
* ``++k=v``  add or replace;
* ``k=v``    set (NeMo Gym rejects this on its empty primary config; we accept it);
* ``~k``     delete ``k`` from the final merged config (applied by the loader).

Dotted keys nest; ``${...}`` values stay verbatim for OmegaConf. ``+config_paths=...`` given more
than once is concatenated (as NeMo Gym's ``gym`` front end coalesces them) instead of rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gymfleet.errors import OverrideError

from ._tree import has_path, set_path

_EXPECTED_FORMS = (
    "Expected one of: '+key=value' (add), '++key=value' (add or replace), 'key=value' (set) or "
    "'~key' (delete); dotted keys nest (e.g. '++head_server.port=11001'), lists are '[a,b]', "
    "and values with spaces or special characters need quotes (e.g. '+key=\"a b\"')."
)


@dataclass
class ParsedOverrides:
    """What the command line asked for: values to merge on top and keys to delete at the end."""

    values: dict[str, Any] = field(default_factory=dict)
    deletions: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _parser() -> Any:
    # Imported lazily: hydra's grammar module costs ~0.3 s and only the CLI path needs it.
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _plain(value: Any) -> Any:
    """Hydra values to plain Python (its containers are already dict/list of primitives)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_overrides(overrides: Sequence[str]) -> ParsedOverrides:
    """Parse Hydra-style override tokens into a nested dict and a list of keys to delete.

    Raises:
        OverrideError: a token that does not parse, uses an unsupported form, or adds a key twice.
    """
    parsed = ParsedOverrides()
    if not overrides:
        return parsed
    if isinstance(overrides, str):
        raise OverrideError(
            f"Overrides must be a list of tokens, got the single string {overrides!r}. "
            "Pass e.g. ['+config_paths=[a.yaml]', '++head_server.port=11001']."
        )
    from hydra.errors import HydraException

    parser = _parser()
    for token in overrides:
        if not isinstance(token, str):
            raise OverrideError(f"Override {token!r} is not a string. {_EXPECTED_FORMS}")
        try:
            (override,) = parser.parse_overrides([token])
        except HydraException as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OverrideError(
                f"Could not parse the override '{token}': {detail}. {_EXPECTED_FORMS}"
            ) from exc
        _apply(parsed, token, override)
    return parsed


def _apply(parsed: ParsedOverrides, token: str, override: Any) -> None:
    key: str = override.key_or_group
    if override.package is not None:
        raise OverrideError(
            f"Override '{token}' uses Hydra's '@package' syntax, which gymfleet does not support "
            f"(there are no config groups). Write it as '++{key}=...' instead."
        )
    if override.is_delete():
        parsed.deletions.append(key)
        return
    if override.is_sweep_override():
        if key == "config_paths":
            # "+config_paths=a.yaml,b.yaml" parses as a sweep; it means a list here.
            value: Any = [str(v) for v in override.value().list]
        else:
            raise OverrideError(
                f"Override '{token}' looks like a Hydra sweep (a comma-separated or range value), "
                f"which gymfleet does not run. For a list write '{_prefix(override)}{key}=[a,b]'; for a "
                f"string containing commas quote it: '{_prefix(override)}{key}=\"a,b\"'."
            )
    else:
        value = _plain(override.value())
    if key == "config_paths" and isinstance(value, str) and "${" not in value:
        value = [part.strip() for part in value.split(",") if part.strip()]

    if override.is_add() and has_path(parsed.values, key):
        if key == "config_paths" and isinstance(value, list):
            existing = parsed.values["config_paths"]
            parsed.values["config_paths"] = [*existing, *value] if isinstance(existing, list) else value
            return
        raise OverrideError(
            f"Override '{token}' adds '{key}', but an earlier override on the command line already set "
            f"it. Give '{key}' once, or use '++{key}=...' to replace the earlier value."
        )
    set_path(parsed.values, key, value, merge=True)


def _prefix(override: Any) -> str:
    if override.is_force_add():
        return "++"
    if override.is_add():
        return "+"
    return ""
