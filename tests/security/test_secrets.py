"""Secrets never reach an unauthenticated client or a log line (in-process; the fleet-level checks are in
test_fleet_security.py)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import yaml

from gymfleet.config import load_config, to_yaml
from gymfleet.config._secrets import ENV_SECRETS_KEY, env_yaml_secret_values
from gymfleet.log_masking import SecretMaskingFilter, install_secret_masking
from gymfleet.security import settings_from_config
from tests.security.apps import API_KEY, TOKEN, asgi_client, fleet_config, head_app, routes

RIGHT = {"Authorization": f"Bearer {TOKEN}"}
REGISTRATION = {"name": "remote_model", "server_type": "responses_api_models", "impl": "vllm_model",
                "host": "127.0.0.1", "port": 9, "url": "http://127.0.0.1:9", "pid": 1,
                "block": {"entrypoint": "app.py", "base_url": f"http://u:{API_KEY}@h/v1"}}


async def test_config_view_is_redacted_without_the_token_and_full_with_it():
    config = fleet_config(leak=f"http://x/?key={API_KEY}")
    async with asgi_client(head_app(config)[1]) as client:  # no token configured: everyone is a stranger
        text = json.loads((await client.get("/global_config_dict_yaml")).content)
        assert API_KEY not in text
        assert yaml.safe_load(text)["leak"] == "http://x/?key=****"
    _, app = head_app({**config, "fleet_token": TOKEN})
    async with asgi_client(app) as client:
        assert (await client.get("/global_config_dict_yaml")).status_code == 401
        full = yaml.safe_load(json.loads((await client.get("/global_config_dict_yaml", headers=RIGHT)).content))
        assert full["policy_api_key"] == API_KEY  # a client holding the token is trusted


async def test_no_route_but_the_trusted_config_view_serves_a_secret():
    _, app = head_app(fleet_config(fleet_token=TOKEN))
    async with asgi_client(app, headers=RIGHT) as client:
        assert (await client.post("/registry/register", json=REGISTRATION)).status_code == 200
        for method, path in routes(app):
            if method != "GET" or path == "/global_config_dict_yaml":
                continue
            resp = await client.get(path, params={"name": "remote_model"} if "registry" in path else None)
            assert API_KEY not in resp.text and TOKEN not in resp.text, path


def test_env_yaml_values_are_recorded_and_hidden(tmp_path: Path):
    (tmp_path / "env.yaml").write_text(
        "policy_base_url: http://127.0.0.1:8000/v1\n"
        "policy_model_name: meta-llama/Llama-3.1-8B-Instruct\n"
        "judge_credentials_blob: plain-words\n"
        "judge: {key: nvapi-abcdefgh12345}\n"
        "opaque: 9f8e7d6c5b4a39281706\n"
    )
    (tmp_path / "a.yaml").write_text("judge_url: https://judge/?k=${opaque}\nmodel: ${policy_model_name}\n")
    cfg = load_config(["+config_paths=[a.yaml]"], roots=[tmp_path])
    recorded = list(cfg[ENV_SECRETS_KEY])
    assert recorded == ["9f8e7d6c5b4a39281706", "nvapi-abcdefgh12345", "plain-words"]
    dumped = to_yaml(cfg, resolve=True, redact=True)
    for value in recorded:
        assert value not in dumped
    assert "judge_url: https://judge/?k=****" in dumped
    assert "meta-llama/Llama-3.1-8B-Instruct" in dumped and "http://127.0.0.1:8000/v1" in dumped
    assert set(recorded) <= set(settings_from_config(cfg, environ={}).secret_values)
    assert env_yaml_secret_values({"u": f"https://user:{API_KEY}@host/v1"}) == [API_KEY]


def test_log_masking_hides_secrets_in_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(SecretMaskingFilter([API_KEY, TOKEN, "short"]))
    logger = logging.getLogger("gymfleet.tests.masking")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("calling %s with key=%s", "http://x", API_KEY)
        logger.error("token %r", {"t": TOKEN})
        try:
            raise RuntimeError(f"upstream said: bad key {API_KEY}")
        except RuntimeError:
            logger.exception("failed")
        logger.info("a short value stays: short")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert API_KEY not in text and TOKEN not in text
    assert text.count("****") == 3 and "bad key ****" in text and "stays: short" in text


def test_process_masking_applies_to_gymfleet_handlers():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("gymfleet")
    logger.addHandler(handler)
    try:
        install_secret_masking([API_KEY])
        logging.getLogger("gymfleet.anything").warning("leaking %s", API_KEY)
    finally:
        install_secret_masking([])
        logger.removeHandler(handler)
    assert API_KEY not in stream.getvalue() and "leaking ****" in stream.getvalue()
