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

import re
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


# The common tokens ('+config_paths=[a.yaml,b.yaml]', '++limit=200', '++head_server.host=10.0.0.5', '~key') are
# parsed here with Hydra's own typing rules for them; anything else goes to Hydra's grammar. Importing that grammar
# costs ~0.2 s of every command's start-up. tests/config/test_overrides_fast.py checks both agree.
_KEY = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_FAST_TOKEN = re.compile(
    rf"^(?P<prefix>\+\+|\+|)(?P<key>{_KEY})=(?P<value>[^\s'\"${{}}()\\=,\[\]]*|\[[^\s'\"${{}}()\\=\[\]]*\])$"
)
_FAST_DELETE = re.compile(rf"^~(?P<key>{_KEY})$")
_INT = re.compile(r"^[+-]?(?:0|[1-9][0-9]*)$")
_STRING = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_DOTTED_NUMBERS = re.compile(r"^[0-9]+(?:\.[0-9]+){2,}$")  # an IPv4 address or a version: a string for Hydra
_NOT_STRINGS = {"true", "false", "null", "inf", "nan"}


class _Unsupported(Exception):
    pass


def _fast_primitive(text: str) -> Any:
    if _INT.match(text):
        return int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if (_STRING.match(text) and lowered not in _NOT_STRINGS) or _DOTTED_NUMBERS.match(text):
        return text
    raise _Unsupported  # floats, IPs, empty values...: Hydra decides


class _FastOverride:
    """The parts of Hydra's ``Override`` that :func:`_apply` reads, for a token parsed without Hydra."""

    package = None

    def __init__(self, prefix: str, key: str, value: Any, delete: bool = False) -> None:
        self.key_or_group = key
        self._prefix, self._value, self._delete = prefix, value, delete

    def is_delete(self) -> bool:
        return self._delete

    def is_sweep_override(self) -> bool:
        return False

    def is_add(self) -> bool:
        return self._prefix == "+"

    def is_force_add(self) -> bool:
        return self._prefix == "++"

    def value(self) -> Any:
        return self._value


def _fast_parse(token: str) -> _FastOverride | None:
    """``token`` parsed exactly as Hydra would, or None when it is not one of the simple forms handled here."""
    deleted = _FAST_DELETE.match(token)
    if deleted:
        return _FastOverride("", deleted["key"], None, delete=True)
    match = _FAST_TOKEN.match(token)
    if match is None:
        return None
    text = match["value"]
    try:
        if text.startswith("["):
            inner = text[1:-1]
            value: Any = [] if inner == "" else [_fast_primitive(item) for item in inner.split(",")]
        else:
            value = _fast_primitive(text)
    except _Unsupported:
        return None
    return _FastOverride(match["prefix"], match["key"], value)


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
    for token in overrides:
        if not isinstance(token, str):
            raise OverrideError(f"Override {token!r} is not a string. {_EXPECTED_FORMS}")
        fast = _fast_parse(token)
        _apply(parsed, token, fast if fast is not None else _hydra_parse(token))
    return parsed


def _hydra_parse(token: str) -> Any:
    from hydra.errors import HydraException

    try:
        (override,) = _parser().parse_overrides([token])
    except HydraException as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OverrideError(f"Could not parse the override '{token}': {detail}. {_EXPECTED_FORMS}") from exc
    return override


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
