"""Fuzzing: schemathesis against every server's OpenAPI schema (in-process apps), raw malformed bodies against every
POST route, and malformed YAML / JSONL corpora against the config loader and the collector.

Pass criteria: zero 500s (a 5xx is only allowed as a typed upstream failure: the in-process agent's peers resolve
nowhere), no exception escapes an app, the loaders raise only typed gymfleet errors, and nothing hangs (a deadline
per example (10 s: a hang, not a slow example), bounded example counts; the whole file stays under a minute on
two busy cores)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from starlette.testclient import TestClient

from gymfleet.config import load_child_config, load_config
from gymfleet.config._yaml import parse_yaml_mapping
from gymfleet.errors import GymFleetError
from gymfleet.rollouts import CollectionConfig, RolloutCollector
from tests.security.apps import AGENT, MODEL, RESOURCES, TOKEN, fleet_config, head_app, routes, server_apps

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Positive examples of the big wire schemas (a /verify body holds a whole response) cost ~1 s each to generate.
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 4, schemathesis.GenerationMode.NEGATIVE: 6}
# The head's dashboard data scrapes every registered URL; fuzzed registrations must never make it call out.
NOT_FUZZED = {("head_server", "GET /dashboard/data")}
TYPED_UPSTREAM = {"upstream_status", "upstream_connect", "upstream_timeout", "upstream_disconnected",
                  "server_not_found", "timeout"}

pytestmark = pytest.mark.timeout(120)


def all_apps() -> dict[str, Any]:
    config = fleet_config(fleet_token=TOKEN)
    return {**server_apps(config), "head_server": head_app(config)[1]}


def check_answer(where: str, status: int, body: bytes) -> None:
    assert status != 500, f"{where}: 500 {body[:500]!r}"
    if status >= 500:
        error = json.loads(body)["error"]
        assert status in (502, 504) and error["type"] in TYPED_UPSTREAM, f"{where}: {status} {body[:500]!r}"


def _fuzz_operation(operation: Any, mode: schemathesis.GenerationMode, where: str) -> None:
    @settings(max_examples=EXAMPLES[mode], deadline=10_000, suppress_health_check=list(HealthCheck),
              database=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(headers=AUTH)
        check_answer(where, response.status_code, response.content)

    run()


@pytest.mark.parametrize("name", [RESOURCES, AGENT, MODEL, "head_server"])
def test_schemathesis_finds_no_server_errors(name):
    app = all_apps()[name]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    fuzzed = 0
    for operation in operations:
        if (name, operation.label) in NOT_FUZZED:
            continue
        for mode in schemathesis.GenerationMode:
            try:
                _fuzz_operation(operation, mode, f"{name} {operation.label} ({mode.value})")
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to break in a parameterless route
                continue
            fuzzed += 1
    assert fuzzed >= 2


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
RAW_BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=400).map(lambda n: (b"[" * n) + (b"]" * n)),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _post_raw_bodies(client: TestClient, path: str, where: str) -> None:
    @settings(max_examples=12, deadline=10_000, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(body=RAW_BODIES, content_type=st.sampled_from(["application/json", "text/plain", None]))
    def run(body: bytes, content_type: str | None) -> None:
        headers = {"content-type": content_type} if content_type else {}
        response = client.post(path, content=body, headers=headers)
        check_answer(where, response.status_code, response.content)

    run()


def test_raw_bodies_never_500():
    for name, app in all_apps().items():
        posts = [path for method, path in routes(app) if method == "POST"]
        with TestClient(app, headers=AUTH) as client:
            for path in posts:
                _post_raw_bodies(client, path, f"{name} POST {path}")


YAML_CORPUS = [
    "a: " + "[" * 3000 + "]" * 3000,
    "a: " + "{b: " * 2000 + "1" + "}" * 2000,
    "".join("  " * i + f"k{i}:\n" for i in range(1500)),
    "a: !!python/object/apply:os.system ['true']",
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",  # billion laughs
    "a: &a [x, *a]",  # recursive alias
    "a: \x00", "\ufeffa: 1", "a:\n\tb: 1", "a: 1\na: 2", "- 1\n- 2", "hello", "1: 2", "~: 2", "a: ${b}",
    "a: ${b}\nb: ${a}", "a: ${", "a: ${oc.decode:'[1'}", "x:\n  resources_servers:\n    y: 5",
    "x:\n  resources_servers:\n    y:\n      entrypoint: [1]\n      port: -5", "a: " + "9" * 5000,
    "head_server: {port: 99999999}", "head_server: 5", "config_paths: 7", "config_paths: [missing.yaml]",
    "x:\n  responses_api_agents:\n    y:\n      entrypoint: app.py\n      resources_server: {type: nope, name: 1}",
]


def _load_everywhere(text: str, directory: Path) -> None:
    """Every way a config text enters gymfleet; only typed gymfleet errors may come out."""
    for attempt in (
        lambda: parse_yaml_mapping(text, "fuzz"),
        lambda: load_child_config({"NEMO_GYM_CONFIG_DICT": text}),
        lambda: load_config(["+config_paths=[f.yaml]"], roots=[directory], load_env_yaml=False),
    ):
        try:
            attempt()
        except GymFleetError:
            pass


def test_config_loader_survives_malformed_yaml(tmp_path):
    for n, text in enumerate(YAML_CORPUS):
        directory = tmp_path / f"c{n}"
        directory.mkdir()
        (directory / "f.yaml").write_text(text, encoding="utf-8")
        _load_everywhere(text, directory)

    @settings(max_examples=40, deadline=10_000, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?~ \n\t$0129.e")), max_size=80))
    def run(text: str) -> None:
        (tmp_path / "h").mkdir(exist_ok=True)
        (tmp_path / "h" / "f.yaml").write_text(text, encoding="utf-8")
        _load_everywhere(text, tmp_path / "h")

    run()


JSONL_CORPUS = [
    b"", b"{", b"[]", b"null", b'"x"', b'{"responses_create_params": 5}',
    b'{"responses_create_params": {}, "agent_ref": 7}', b"[" * 3000 + b"]" * 3000, b"\xff\xfe\x00", b"\x00",
    b'{"responses_create_params": {"input": "x"}, "_ng_task_index": -1}',
    b'{"responses_create_params": {"input": "x"}, "_ng_task_index": 1e400}', b"\xef\xbb\xbf{}", b'{"a":1}\r',
    b'{"responses_create_params": {"input": "x"}, "agent_ref": {"name": null}}', b"9" * 5000,
    b'{"responses_create_params": {"input": "x"}, "_ng_task_index": 3}\n'
    b'{"responses_create_params": {"input": "y"}, "_ng_task_index": 3}',
]


async def _collect(path: Path, body: bytes, skip_invalid: bool) -> None:
    async def dispatch(row: dict[str, Any]) -> dict[str, Any]:
        return {"reward": 1.0, "response": {"output": []}}

    path.mkdir(parents=True, exist_ok=True)
    (path / "in.jsonl").write_bytes(b'{"responses_create_params": {"input": "ok"}}\n' + body + b"\n")
    config = CollectionConfig.from_mapping({
        "agent_name": "a", "input_jsonl_fpath": str(path / "in.jsonl"), "output_jsonl_fpath": str(path / "out.jsonl"),
        "skip_invalid_rows": skip_invalid, "quiet": True, "disable_aggregation": True, "progress_interval_s": 0.05,
    })
    try:
        summary = await asyncio.wait_for(RolloutCollector(config, dispatch).run(handle_signals=False), 10)
    except GymFleetError:
        # Typed is fine; but one broken line (not a dataset-level problem such as duplicate task indexes) must be
        # recorded, not fatal, when skipping invalid rows.
        assert not skip_invalid or not body.strip() or b"\n" in body, body[:200]
        return
    assert summary.succeeded >= 1 and summary.missing == 0


async def test_collector_survives_malformed_jsonl(tmp_path):
    for n, body in enumerate(JSONL_CORPUS):
        for skip in (False, True):
            await _collect(tmp_path / f"j{n}{skip}", body, skip)


def test_collector_survives_random_lines(tmp_path):
    counter = iter(range(10_000))

    @settings(max_examples=25, deadline=10_000, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(body=st.one_of(st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b),
                          JSON_VALUES.map(lambda v: json.dumps(v).encode())),
           skip=st.booleans())
    def run(body: bytes, skip: bool) -> None:
        asyncio.run(_collect(tmp_path / f"r{next(counter)}", body, skip))

    run()
