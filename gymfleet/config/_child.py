"""Config for a server process: read from the environment, never from the command line.

The launcher hands each child the whole resolved config as a file (``$GYMFLEET_CONFIG_FILE``, which
keeps secrets out of ``/proc/<pid>/environ`` and has no argv size limit); containers and NeMo Gym
tooling pass YAML or JSON text in ``$NEMO_GYM_CONFIG_DICT``. ``$NEMO_GYM_CONFIG_PATH`` names the
child's own instance; when unset it is inferred if the dict holds exactly one server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from gymfleet.errors import ConfigError, ConfigFileNotFoundError, NoServerInstancesError

from ._directives import register_resolvers
from ._instances import get_instance, locate_instances, validate_instance
from ._loader import apply_defaults, to_dictconfig
from ._models import CONFIG_DICT_ENV, CONFIG_FILE_ENV, CONFIG_PATH_ENV
from ._yaml import load_yaml_file, parse_yaml_mapping


def load_child_config(environ: Mapping[str, str] | None = None) -> tuple[DictConfig, str]:
    """The whole config and this server's instance name, from the environment.

    Reads ``$GYMFLEET_CONFIG_FILE`` (preferred) or ``$NEMO_GYM_CONFIG_DICT``; the instance name from
    ``$NEMO_GYM_CONFIG_PATH`` or, when unset, the only server instance in the dict. Fills the
    defaults a hand-written dict may lack (``head_server``, ``dry_run: false``, server hosts) and
    validates this server's own block. No CLI parsing, no env.yaml.

    Raises:
        ConfigError: no config in the environment, or the instance cannot be chosen.
        ConfigFileNotFoundError, MalformedConfigError, InvalidServerConfigError,
        ServerRefNotFoundError (unknown ``$NEMO_GYM_CONFIG_PATH``), ConfigInterpolationError.
    """
    env = os.environ if environ is None else environ
    register_resolvers()
    config_file = env.get(CONFIG_FILE_ENV, "").strip()
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigFileNotFoundError(
                f"${CONFIG_FILE_ENV} points at '{path}', which does not exist. The launcher writes this "
                f"file before starting the server; unset {CONFIG_FILE_ENV} to use "
                f"${CONFIG_DICT_ENV} instead.",
                path=str(path),
            )
        plain = load_yaml_file(path)
    elif env.get(CONFIG_DICT_ENV, "").strip():
        plain = parse_yaml_mapping(env[CONFIG_DICT_ENV], f"${CONFIG_DICT_ENV}")
    else:
        raise ConfigError(
            f"No config found for this server: set ${CONFIG_FILE_ENV} (a YAML file with the whole config) "
            f"or ${CONFIG_DICT_ENV} (the config as YAML or JSON text), and ${CONFIG_PATH_ENV} to this "
            "server's instance name. Servers are normally started by 'gymfleet run' / ng_run, "
            "which sets them."
        )

    name = env.get(CONFIG_PATH_ENV, "").strip() or _infer_instance(plain)
    apply_defaults(plain)
    cfg = to_dictconfig(plain)
    inst = get_instance(cfg, name)
    # The tutorial's container example has no 'domain'; a child only needs to run, not to be listed.
    validate_instance(inst, require_domain=False)
    return cfg, name


def _infer_instance(plain: dict[str, object]) -> str:
    located = locate_instances(plain)
    if len(located) == 1:
        return located[0][0]
    if not located:
        raise NoServerInstancesError(
            f"The config from the environment has no server instance (a top-level key shaped "
            f"'<name>: {{<server_type>: {{<impl>: {{entrypoint: app.py, ...}}}}}}'), so this server does "
            f"not know what to run. Add its block, and set ${CONFIG_PATH_ENV} to its name."
        )
    names = ", ".join(f"'{n}'" for n, _, _ in located)
    raise ConfigError(
        f"The config from the environment has {len(located)} server instances ({names}) and "
        f"${CONFIG_PATH_ENV} is not set, so this server cannot tell which one it is. Set "
        f"{CONFIG_PATH_ENV}=<instance name>, e.g. {CONFIG_PATH_ENV}={located[0][0]}.",
        key=CONFIG_PATH_ENV,
    )
