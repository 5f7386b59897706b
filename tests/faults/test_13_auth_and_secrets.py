"""Mode 13: unauthenticated access and credential leakage.

A fleet with a token (``$GYMFLEET_TOKEN``) and an API key in env.yaml. Injected: anonymous calls to the control and
discovery endpoints (config, instances, registry, metrics, rollouts, tools); a session cookie forged with NeMo Gym's
guessable signing key (``<Class>___<name>``); a look for the secrets in answers, log files and every process's command
line and environment. Expected: every anonymous call 401 (liveness excepted), the forged cookie never accepted, the
secrets nowhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

import httpx

from tests.faults.tools import procs
from tests.faults.tools.fleet import AGENT, fleet_env
from tests.fleet_helpers import EXAMPLE_CONFIG, SCRIPTED_CONFIG, run_fleet_process
from tests.security.fleet import config_path, exposed_text

ENV_NAME = "example_single_tool_call"
COOKIE = f"ExampleSingleToolCallServer___{ENV_NAME}"


def _nemo_gym_forgery(session_id: str, instance_id: str) -> str:
    """A cookie signed the way a predictable per-class key allows (what #2109 says anyone can do offline)."""
    payload = f"{session_id}.{instance_id}"
    digest = hmac.new(COOKIE.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(digest[:18]).decode()}"


def test_strangers_get_401_and_secrets_leak_nowhere(tmp_path: Path, scenario) -> None:
    sc = scenario(13, "anonymous access, forged cookie, secret in env var / env.yaml",
                  "every control/discovery call 401 (liveness 200), forged cookie rejected, secrets in 0 places")
    token, api_key = f"tok-{secrets.token_hex(12)}", f"sk-{secrets.token_hex(16)}"
    (tmp_path / "env.yaml").write_text(f"policy_api_key: {api_key}\n")
    args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "++head_server.port=0"]
    auth = {"Authorization": f"Bearer {token}"}
    with run_fleet_process(tmp_path, args, cwd=tmp_path, env=fleet_env({"GYMFLEET_TOKEN": token})) as fleet:
        head, agent, env = fleet.head_url, fleet.url(AGENT), fleet.url(ENV_NAME)
        probes = [("GET", head + "/global_config_dict_yaml"), ("GET", head + "/server_instances"),
                  ("GET", head + "/registry/instances?name=" + ENV_NAME), ("GET", head + "/metrics"),
                  ("POST", head + "/registry/register"), ("POST", agent + "/run"), ("POST", env + "/seed_session"),
                  ("POST", env + "/verify"), ("POST", env + "/get_weather"), ("GET", env + "/metrics"),
                  ("GET", fleet.url("policy_model") + "/v1/models")]
        with httpx.Client(timeout=10) as client:
            anonymous = {url: client.request(m, url, json={}).status_code for m, url in probes}
            wrong = {url: client.request(m, url, json={}, headers={"Authorization": "Bearer nope"}).status_code
                     for m, url in probes}
            liveness = [client.get(u + "/").status_code for u in (head, agent, env)]
            # Cookies by hand (a client's jar would resend the ones it got, across ports of one host).
            seeded = httpx.post(env + "/seed_session", json={}, headers=auth, timeout=10)
            real = seeded.cookies[COOKIE]
            session_id, instance_id, _ = real.split(".")
            forged = _nemo_gym_forgery("attacker-session", instance_id)
            reply = httpx.post(env + "/seed_session", json={}, headers=auth, cookies={COOKIE: forged}, timeout=10)
            forged_accepted = COOKIE not in reply.cookies  # a valid cookie is kept as is; a forged one is replaced
            answers = [client.get(head + "/server_instances", headers=auth).text,
                       client.get(head + "/registry/instances", headers=auth).text]
        logs = [fleet.log_path, *sorted((tmp_path / "logs").glob("*.log"))]
        texts = {str(p): p.read_text(errors="replace") for p in logs}
        texts.update({f"/proc/{pid}": exposed_text(pid)
                      for pid in [fleet.proc.pid, *procs.descendants(fleet.proc.pid)]})
        texts.update({f"answer {i}": a for i, a in enumerate(answers)})
    leaks = sorted(where for where, text in texts.items() if token in text or api_key in text)
    sc.observe(probes=len(probes), anonymous_401=sum(s == 401 for s in anonymous.values()),
               wrong_token_401=sum(s == 401 for s in wrong.values()), liveness=liveness,
               places_searched=len(texts), leaks=leaks, forged_cookie_accepted=forged_accepted)
    sc.check("every anonymous control/discovery call answered 401", all(s == 401 for s in anonymous.values()))
    sc.check("every wrong-token call answered 401", all(s == 401 for s in wrong.values()))
    sc.check("liveness stays open (200)", liveness == [200, 200, 200])
    sc.check("a cookie forged with the guessable key is not accepted", not forged_accepted)
    sc.check("token and API key in 0 answers, logs, command lines or environments", not leaks)
    sc.finish()
