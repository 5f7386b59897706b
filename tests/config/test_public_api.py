"""The package's public names are declared once in __all__ and really exist."""

from __future__ import annotations

import gymfleet.config as config


def test_all_matches_the_namespace() -> None:
    public = {name for name in dir(config) if not name.startswith("_")}
    assert set(config.__all__) == public
    for name in config.__all__:
        assert getattr(config, name) is not None


def test_constants() -> None:
    assert config.SERVER_TYPES == ("resources_servers", "responses_api_agents", "responses_api_models")
    assert (config.DEFAULT_HEAD_HOST, config.DEFAULT_HEAD_PORT) == ("127.0.0.1", 11000)
    assert config.CONFIG_FILE_ENV == "GYMFLEET_CONFIG_FILE"
    assert config.CONFIG_DICT_ENV == "NEMO_GYM_CONFIG_DICT"
    assert config.CONFIG_PATH_ENV == "NEMO_GYM_CONFIG_PATH"
