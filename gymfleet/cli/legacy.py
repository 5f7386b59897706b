"""NeMo Gym's command names, unchanged: ``ng_run "+config_paths=[a.yaml,b.yaml]"`` and friends.

They take Hydra-style overrides only (no flags), as NeMo Gym's do; each maps onto the same function as its
``gymfleet`` twin. Extra gymfleet knobs travel as overrides too, e.g. ``ng_run ... +launch_mode=worker``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gymfleet.cli.main import cmd_collect, cmd_config, cmd_run, cmd_status, dispatch
from gymfleet.fdlimit import raise_open_file_limit
from gymfleet.logs import configure_logging

__all__ = ["ng_collect_rollouts", "ng_dump_config", "ng_run", "ng_status"]

_HELP = {
    "ng_run": 'Start a fleet: ng_run "+config_paths=[a.yaml,b.yaml]" '
    "[+launch_mode=auto|head|worker|head-only] [++k=v ...]",
    "ng_collect_rollouts": "Collect rollouts: ng_collect_rollouts +agent_name=AGENT +input_jsonl_fpath=IN.jsonl "
    "+output_jsonl_fpath=OUT.jsonl [+limit=N] [+num_repeats=K] [+num_samples_in_parallel=C] [+resume_from_cache=true]",
    "ng_status": "Show registered servers: ng_status [++head_server.host=H ++head_server.port=P] [+json=true]",
    "ng_dump_config": 'Print the resolved config, secrets hidden: ng_dump_config "+config_paths=[a.yaml]"',
}


class _Args:
    def __init__(self, overrides: Sequence[str], **kwargs: object) -> None:
        self.overrides = list(overrides)
        self.config = None
        self.__dict__.update(kwargs)


def _entry(name: str, argv: Sequence[str] | None) -> list[str] | None:
    tokens = list(sys.argv[1:] if argv is None else argv)
    if any(t in ("-h", "--help", "help") for t in tokens):
        sys.stdout.write(_HELP[name] + "\n")
        return None
    configure_logging(verbose=any(t.lstrip("+") in ("verbose=true", "verbose=True") for t in tokens))
    raise_open_file_limit()
    return tokens


def _flag(tokens: list[str], key: str) -> bool:
    found = False
    for token in list(tokens):
        if token.lstrip("+") in (f"{key}=true", f"{key}=True"):
            tokens.remove(token)
            found = True
    return found


def ng_run(argv: Sequence[str] | None = None) -> int:
    tokens = _entry("ng_run", argv)
    if tokens is None:
        return 0
    return dispatch(cmd_run, _Args(tokens, mode=None, log_dir=None, quiet=False, startup_timeout=120.0))


def ng_collect_rollouts(argv: Sequence[str] | None = None) -> int:
    tokens = _entry("ng_collect_rollouts", argv)
    if tokens is None:
        return 0
    return dispatch(cmd_collect, _Args(tokens, agent=None, input=None, output=None, limit=None, num_repeats=None,
                                       concurrency=None, resume=False, head=None, quiet=False))


def ng_status(argv: Sequence[str] | None = None) -> int:
    tokens = _entry("ng_status", argv)
    if tokens is None:
        return 0
    as_json = _flag(tokens, "json")
    return dispatch(cmd_status, _Args(tokens, head=None, json=as_json))


def ng_dump_config(argv: Sequence[str] | None = None) -> int:
    tokens = _entry("ng_dump_config", argv)
    if tokens is None:
        return 0
    return dispatch(cmd_config, _Args(tokens, strict=False))
