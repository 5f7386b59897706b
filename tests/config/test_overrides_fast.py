"""The simple override forms parsed without Hydra give exactly what Hydra's grammar gives (key, form, value, type)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymfleet.config._overrides import _fast_parse, _hydra_parse, _plain, parse_overrides


def _shape(override: Any) -> tuple[Any, ...]:
    value = None if override.is_delete() else _plain(override.value())
    return (override.key_or_group, override.is_add(), override.is_force_add(), override.is_delete(),
            override.is_sweep_override(), value, type(value).__name__,
            [type(v).__name__ for v in value] if isinstance(value, list) else None)


TRICKY = [
    "+config_paths=[a.yaml,b/c.yaml]", "+config_paths=[]", "++limit=200", "limit=0", "++x=-7", "++x=+7", "++x=007",
    "++x=1_000", "++x=1.5", "++x=.5", "++x=1e3", "++x=inf", "++x=-inf", "++x=NaN", "++x=nan", "++x=True", "++x=FALSE",
    "++x=null", "++x=NULL", "++x=None", "++x=e5", "++x=inf5", "++x=true.x", "++x=a.b.c", "++x=/tmp/out-1.jsonl",
    "++x=a-b", "++x=_", "++x=__init__", "++head_server.host=10.0.0.5", "++a.b.c=d", "~a.b", "~head_server",
    "++x=[1,2,3]", "++x=[true,null,a]", "++x=[1,,2]", "++x=", "+x=a,b", "++x=[a, b]", "++x=${oc.env:HOME}",
    "++x='quoted'", "++x=ftp://h/p", "++x=a@b", "++x=-x", "++x=1a", "++x=0", "++x=-0",
    "++head_server.host=127.0.0.1", "++x=1.2.3", "++x=10.0.0.5", "++x=1.2", "++x=1.2.", "++x=01.2.3",
]


@pytest.mark.parametrize("token", TRICKY)
def test_fast_forms_match_hydra(token: str) -> None:
    fast = _fast_parse(token)
    if fast is None:
        return  # Hydra parses it (or rejects it) itself
    assert _shape(fast) == _shape(_hydra_parse(token))


def test_the_common_forms_take_the_fast_path() -> None:
    for token in ("+config_paths=[a.yaml,b/c.yaml]", "++limit=200", "++quiet=true", "~a.b",
                  "++output_jsonl_fpath=/tmp/out.jsonl", "++head_server.port=11001", "+agent_name=my_agent",
                  "++head_server.host=127.0.0.1"):
        assert _fast_parse(token) is not None, token


_chars = st.sampled_from(list("abzAZ019_-./:@+,[]~=eE") + ["true", "null", "inf", "nan", "1.5"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(["", "+", "++"]), key=st.sampled_from(["k", "a.b", "head_server.port", "x_1"]),
       value=st.lists(_chars, max_size=8).map("".join))
def test_generated_tokens_agree_with_hydra(prefix: str, key: str, value: str) -> None:
    token = f"{prefix}{key}={value}"
    fast = _fast_parse(token)
    if fast is not None:
        assert _shape(fast) == _shape(_hydra_parse(token)), token


def test_parse_overrides_result_unchanged() -> None:
    parsed = parse_overrides(["+config_paths=[a.yaml]", "++head_server.port=11001", "+config_paths=[b.yaml]",
                              "~policy_model", "++x=1.5"])
    assert parsed.values == {"config_paths": ["a.yaml", "b.yaml"], "head_server": {"port": 11001}, "x": 1.5}
    assert parsed.deletions == ["policy_model"]
