"""Hiding secrets when a config is printed, logged or served.

A key is secret when its words (split on ``_``, ``-``, ``.``, spaces and camelCase) contain one of
the secret words. Matching whole words, not substrings, keeps ``max_tokens`` and ``tokenizer``
readable while ``hf_token``, ``openai_api_key``, ``apiKey`` and ``DB_PASSWORD`` are hidden. Only
non-empty string values are replaced: a boolean such as ``token_id_capture`` reveals nothing.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

REDACTED = "****"
# Top-level key under which the config loader records env.yaml values (a secret-looking key, so it is redacted
# wherever the config is shown, and its values are masked wherever they appear).
ENV_SECRETS_KEY = "env_secret_values"
# Query values of env.yaml URLs shorter than this are not treated as secrets.
_MIN_ENV_SECRET_LEN = 8

# Word sequences that mark a key as secret; a word ending in "*" matches by prefix.
_SECRET_WORDS: tuple[tuple[str, ...], ...] = (
    ("api", "key"),
    ("apikey",),
    ("token",),
    ("secret*",),
    ("password*",),
    ("passwd",),
    ("private", "key"),
    ("privatekey",),
    ("access", "key"),
    ("signing", "key"),
    ("credential*",),
    ("authorization",),
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")
# Values shorter than this are not hunted for inside other strings (too many false hits).
_MIN_SECRET_VALUE_LEN = 4


def _words(key: str) -> list[str]:
    return [w.lower() for w in _SPLIT.split(_CAMEL.sub("_", key)) if w]


def _word_match(word: str, pattern: str) -> bool:
    return word.startswith(pattern[:-1]) if pattern.endswith("*") else word == pattern


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret (api_key, apikey, token, secret, password, passwd,
    private_key, credential, ...), case-insensitively and by whole words."""
    if not isinstance(key, str):
        return False
    words = _words(key)
    for seq in _SECRET_WORDS:
        n = len(seq)
        for i in range(len(words) - n + 1):
            if all(_word_match(words[i + j], seq[j]) for j in range(n)):
                return True
    return False


def redact_secrets(obj: Any, *, extra_secret_values: Iterable[str] = ()) -> Any:
    """A deep copy of ``obj`` (plain Python or OmegaConf) with secret values replaced by ``"****"``.

    Values under secret keys are replaced (every string below them, for nested values), and any
    occurrence of one of ``extra_secret_values`` inside any string is replaced too (e.g. an API key
    that was interpolated into a URL). OmegaConf input is read unresolved.
    """
    if isinstance(obj, DictConfig | ListConfig):
        obj = OmegaConf.to_container(obj, resolve=False)
    extras = sorted(
        {v for v in extra_secret_values if isinstance(v, str) and len(v) >= _MIN_SECRET_VALUE_LEN},
        key=len,
        reverse=True,
    )
    return _redact(obj, False, extras)


def _redact(obj: Any, under_secret: bool, extras: list[str]) -> Any:
    if isinstance(obj, Mapping):
        return {k: _redact(v, under_secret or is_secret_key(str(k)), extras) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v, under_secret, extras) for v in obj]
    if isinstance(obj, str):
        if under_secret and obj:
            return REDACTED
        for secret in extras:
            if secret in obj:
                obj = obj.replace(secret, REDACTED)
        return obj
    return obj


def secret_values(obj: Any) -> list[str]:
    """The string values found under secret keys in a plain container (for :func:`redact_secrets`)."""
    found: list[str] = []

    def walk(node: Any, under_secret: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, under_secret or is_secret_key(str(k)))
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v, under_secret)
        elif under_secret and isinstance(node, str) and node and node != REDACTED and "${" not in node:
            found.append(node)

    walk(obj, False)
    return found


def to_yaml(cfg: Any, *, resolve: bool = False, redact: bool = False) -> str:
    """YAML text of a config (OmegaConf or plain), keys in config order.

    Args:
        cfg: the config.
        resolve: resolve ``${...}`` interpolations first (they are kept verbatim otherwise).
        redact: hide secrets (see :func:`redact_secrets`); secret values found anywhere in the config
            (resolved when possible) are also masked where they appear inside other strings.
    """
    if isinstance(cfg, DictConfig | ListConfig):
        data = OmegaConf.to_container(cfg, resolve=resolve)
    else:
        data = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True) if resolve else cfg
    if redact:
        try:
            resolved = data if resolve else OmegaConf.to_container(OmegaConf.create(data), resolve=True)
        except OmegaConfBaseException:
            resolved = data
        data = redact_secrets(data, extra_secret_values=secret_values(resolved))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def env_yaml_secret_values(env: Mapping[str, Any]) -> list[str]:
    """The env.yaml values to mask wherever they show up (NeMo Gym's env.yaml is where keys live).

    Recorded: every string under a secret-looking key (at any depth), and any other value shaped like a credential:
    a known key prefix (``sk-``, ``hf_``, ``nvapi-``, ...), or a 16+ character token of letters and digits with no
    whitespace or ``/`` (model names, paths and plain URLs stay readable), and the password and query values of a
    URL. ``config_paths``, ``head_server`` and interpolations (``${...}``) are never recorded.
    """
    found: set[str] = set()

    def walk(node: Any, under_secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, under_secret or is_secret_key(str(key)))
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value, under_secret)
        elif isinstance(node, str):
            found.update(_credential_parts(node, under_secret))

    for key, value in env.items():
        if key not in ("config_paths", "head_server"):
            walk(value, is_secret_key(str(key)))
    return sorted(v for v in found if len(v) >= _MIN_SECRET_VALUE_LEN and v != REDACTED)


_KEY_PREFIXES = ("sk-", "sk_", "hf_", "nvapi-", "ghp_", "gho_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "AIza",
                 "glpat-", "Bearer ")
_TOKEN_SHAPE = re.compile(r"^(?=.*[A-Za-z])(?=.*[0-9])[A-Za-z0-9_\-.+=:~]{16,}$")


def _credential_parts(value: str, under_secret: bool) -> list[str]:
    text = value.strip()
    if not text or "${" in text:
        return []
    if under_secret:
        return [text]
    if "://" in text:
        try:
            parts = urllib.parse.urlsplit(text)
        except ValueError:
            return []
        hidden = [parts.password or ""]
        hidden += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= _MIN_ENV_SECRET_LEN]
        return [h for h in hidden if h]
    if text.startswith(_KEY_PREFIXES) and len(text) >= _MIN_ENV_SECRET_LEN:
        return [text]
    return [text] if _TOKEN_SHAPE.match(text) else []
