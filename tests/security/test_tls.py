"""TLS for the whole fleet from one config block: HTTPS servers and head, https URLs, verified clients, and a
rollout collection end to end (registration, heartbeats, agent -> model/resources, collector -> agent)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import httpx
import pytest
import yaml

from gymfleet.errors import ConfigError
from gymfleet.tls import TLSConfig, client_ssl_context, tls_from_config
from tests.fleet_helpers import AGENT, EXAMPLE_CONFIG, EXAMPLE_DATA, SCRIPTED_CONFIG, run_fleet_process
from tests.security.certs import make_pki
from tests.security.fleet import config_path

TOKEN = "tls-fleet-token-5f4e3d2c1b0a"  # pragma: allowlist secret


def test_tls_block_validation(tmp_path):
    pki = make_pki(tmp_path / "pki")
    assert tls_from_config({}) is None and tls_from_config({"tls": {}}) is None
    tls = tls_from_config({"tls": pki.config()})
    assert tls == TLSConfig(str(pki.cert_file), str(pki.key_file), str(pki.ca_file)) and tls.serves
    assert tls_from_config({"tls": {"ca_file": str(pki.ca_file)}}).serves is False  # a client-only node
    for bad in ({"cert_file": str(pki.cert_file)}, {"cert": "x"}, "yes", {"ca_file": str(tmp_path / "nope.pem")}):
        with pytest.raises(ConfigError):
            tls_from_config({"tls": bad})
    context = client_ssl_context(tls)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_tls_fleet_collects_rollouts_end_to_end(tmp_path):
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump({"tls": pki.config(), "fleet_token": TOKEN}))
    args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "-c", str(tmp_path / "tls.yaml"),
            "++head_server.port=0"]
    with run_fleet_process(tmp_path, args, cwd=tmp_path) as fleet:
        assert fleet.head_url.startswith("https://")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca_file)), headers=auth,
                          timeout=10) as client:
            instances = client.get(fleet.head_url + "/server_instances").json()
            assert len(instances) == 3  # registered (and heartbeating) over TLS
            assert all(i["url"].startswith("https://") and i["status"] == "healthy" for i in instances)
        with pytest.raises(httpx.ConnectError):  # an unverified peer is refused: the CA is not a system root
            httpx.get(fleet.url(AGENT) + "/", timeout=5)
        plain = fleet.url(AGENT).replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(plain + "/", timeout=5)
        head = fleet.head_url.split("//", 1)[1]
        out = tmp_path / "rollouts.jsonl"
        collect = subprocess.run(
            [sys.executable, "-m", "gymfleet.cli.main", "collect", "-c", str(tmp_path / "tls.yaml"), "--head", head,
             "-a", AGENT, "-i", str(EXAMPLE_DATA), "-o", str(out), "--limit", "3", "--num-repeats", "2", "--quiet"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert collect.returncode == 0, collect.stdout[-2000:] + collect.stderr[-3000:]
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 6 and all(r["reward"] == 1.0 for r in rows)
