"""Where relative paths are looked up: extra roots from the environment, then cwd, then the repo."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gymfleet.errors import ConfigFileNotFoundError, InvalidServerConfigError

from ._models import EXTRA_ROOTS_ENVS, SERVER_TYPES

# gymfleet/config/_roots.py -> the directory above the gymfleet/ package.
REPO_ROOT = Path(__file__).resolve().parents[2]


def search_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The roots relative config paths and server dirs are resolved against, in order.

    ``$GYMFLEET_EXTRA_ROOTS`` then ``$NEMO_GYM_EXTRA_ROOTS`` (each ``os.pathsep``-separated), the
    current directory, then the repository root. Duplicates are dropped, first one kept.
    """
    env = os.environ if environ is None else environ
    roots: list[Path] = []
    for var in EXTRA_ROOTS_ENVS:
        for part in env.get(var, "").split(os.pathsep):
            if part.strip():
                roots.append(Path(part.strip()).expanduser())
    roots.append(Path.cwd())
    roots.append(REPO_ROOT)
    unique: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        resolved = root.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique


def candidate_paths(path: str | Path, roots: Sequence[Path]) -> list[Path]:
    """Every location ``path`` may refer to: itself if absolute, else under each root in order."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    return [Path(root) / p for root in roots]


def resolve_file(path: str, roots: Sequence[Path], *, what: str = "Config file", context: str = "") -> Path:
    """The first existing file among :func:`candidate_paths`.

    Raises:
        ConfigFileNotFoundError: listing every location searched.
    """
    candidates = candidate_paths(path, roots)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    searched = "\n".join(f"  - {c}" for c in candidates)
    raise ConfigFileNotFoundError(
        f"{what} '{path}'{context} was not found. Searched:\n{searched}\n"
        "Fix the path, run from the directory it is relative to, or add that directory to "
        "GYMFLEET_EXTRA_ROOTS (os.pathsep-separated).",
        path=path,
    )


def find_server_dir(server_type: str, impl: str, roots: Sequence[Path] | None = None) -> Path:
    """The directory ``<root>/<server_type>/<impl>`` of a server implementation, first root wins.

    Raises:
        InvalidServerConfigError: ``server_type`` is not one of SERVER_TYPES.
        ConfigFileNotFoundError: no root holds that directory (lists every location searched).
    """
    if server_type not in SERVER_TYPES:
        raise InvalidServerConfigError(
            f"Unknown server type '{server_type}' for impl '{impl}'; use one of: {', '.join(SERVER_TYPES)}.",
            key=server_type,
        )
    search = [Path(r) for r in roots] if roots is not None else search_roots()
    rel = Path(server_type) / impl
    candidates = [root / rel for root in search]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    searched = "\n".join(f"  - {c}" for c in candidates)
    raise ConfigFileNotFoundError(
        f"Server directory '{rel}' was not found. Searched:\n{searched}\n"
        "Check the impl name in the config, run from the directory that holds "
        f"'{server_type}/', or add that directory to GYMFLEET_EXTRA_ROOTS.",
        path=str(rel),
    )
