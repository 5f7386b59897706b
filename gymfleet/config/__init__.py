"""gymfleet configuration: load, merge, validate and hand out the fleet config.

Entry points: :func:`load_config` (the launcher and CLIs), :func:`load_child_config` (a server
process), :func:`iter_instances` / :func:`get_instance` (typed server instances).
"""

from ._child import load_child_config
from ._directives import DirectivePathNotFoundError
from ._instances import (
    ServerInstance,
    ServerRefTypeMismatchError,
    find_server_refs,
    get_instance,
    iter_instances,
    unresolved_refs,
)
from ._loader import load_config
from ._models import (
    CONFIG_DICT_ENV,
    CONFIG_FILE_ENV,
    CONFIG_PATH_ENV,
    DEFAULT_HEAD_HOST,
    DEFAULT_HEAD_PORT,
    DOMAINS,
    RESERVED_KEYS,
    SERVER_TYPES,
    DatasetConfig,
    HeadServerConfig,
    ServerInstanceConfig,
    ServerRef,
)
from ._roots import find_server_dir, search_roots
from ._secrets import is_secret_key, redact_secrets, to_yaml

__all__ = [
    "CONFIG_DICT_ENV",
    "CONFIG_FILE_ENV",
    "CONFIG_PATH_ENV",
    "DEFAULT_HEAD_HOST",
    "DEFAULT_HEAD_PORT",
    "DOMAINS",
    "RESERVED_KEYS",
    "SERVER_TYPES",
    "DatasetConfig",
    "DirectivePathNotFoundError",
    "HeadServerConfig",
    "ServerInstance",
    "ServerInstanceConfig",
    "ServerRef",
    "ServerRefTypeMismatchError",
    "find_server_dir",
    "find_server_refs",
    "get_instance",
    "is_secret_key",
    "iter_instances",
    "load_child_config",
    "load_config",
    "redact_secrets",
    "search_roots",
    "to_yaml",
    "unresolved_refs",
]
