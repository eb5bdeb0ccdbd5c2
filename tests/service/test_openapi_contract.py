"""The public API is a contract: the OpenAPI document may only grow. `openapi-0.1.json` is the
document of release 0.1 (before the control-plane split); every path, operation, parameter,
response and schema in it must still be there, unchanged (descriptions may be reworded), except
that a field may accept more than it did: a length or size bound widened, a pattern that still
matches everything the old one matched (`encoder_job` took job ids; it also takes `model:...`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.app import create_app
from service.control.settings import Settings

BASELINE = Path(__file__).with_name("openapi-0.1.json")


WIDER = {"maxLength": max, "maxItems": max, "maximum": max, "minLength": min, "minItems": min, "minimum": min}
"""Bounds that accept more when they move this way."""


def accepts_all_of(old: str, new: str, max_length: int | None) -> bool:
    """Whether pattern `new` matches every string pattern `old` matches (up to `max_length`), on
    200 strings drawn from `old`."""
    matched = []

    @settings(max_examples=200, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(old, fullmatch=True).filter(lambda text: max_length is None or len(text) <= max_length))
    def check(text):
        matched.append(re.search(new, text) is not None)
        assert matched[-1], text

    try:
        check()
    except AssertionError:
        return False
    return all(matched)


def removed_or_changed(old, new, path: str = "") -> list[str]:
    """Where `new` lost or changed something `old` has (additions are fine; prose is not a contract)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key, value in old.items():
            if key == "description":
                continue
            if key in WIDER and key in new and WIDER[key](value, new[key]) == new[key]:
                continue  # a bound widened: the field accepts more
            if key == "pattern" and new.get(key, value) != value and accepts_all_of(value, new[key], old.get("maxLength")):
                continue
            if key not in new:
                out.append(f"{path}/{key} removed")
            else:
                out += removed_or_changed(value, new[key], f"{path}/{key}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if all(isinstance(item, dict) and "name" in item for item in old + new):  # parameters, by name
            by_name = {item["name"]: item for item in new}
            out = []
            for item in old:
                where = f"{path}[{item['name']}]"
                out += [f"{where} removed"] if item["name"] not in by_name else \
                    removed_or_changed(item, by_name[item["name"]], where)
            return out
        if all(not isinstance(item, (dict, list)) for item in old):  # required, enum, tags: a set
            missing = [item for item in old if item not in new]
            return [f"{path}: {missing} removed"] if missing else []
    return [] if old == new else [f"{path}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"]


def test_the_openapi_document_only_grows(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", api_keys=["k1"]))
    assert removed_or_changed(json.loads(BASELINE.read_text()), app.openapi()) == []


def test_the_comparison_catches_a_removed_field():
    old = {"paths": {"/v1/jobs": {"get": {"parameters": [{"name": "status"}]}}}, "required": ["a", "b"]}
    new = {"paths": {"/v1/jobs": {"get": {"parameters": []}}}, "required": ["a", "b", "c"]}
    assert removed_or_changed(old, new) == ["/paths//v1/jobs/get/parameters[status] removed"]
    grown = {"paths": {"/v1/jobs": {"get": {"parameters": [{"name": "tag"}, {"name": "status"}]}}}, "required": ["b", "a"]}
    assert removed_or_changed(old, grown) == []


def test_a_field_may_accept_more_but_not_less():
    old = {"type": "string", "maxLength": 64, "minLength": 1, "pattern": "^[a-z_]+$"}
    wider = {"type": "string", "maxLength": 200, "minLength": 1, "pattern": "^(?:[a-z_]{1,64}|model:[a-z]+)$"}
    assert removed_or_changed(old, wider) == []
    narrower = {**wider, "maxLength": 32, "pattern": "^[a-z]+$"}
    assert removed_or_changed(old, narrower) == ["/maxLength: 64 -> 32", '/pattern: "^[a-z_]+$" -> "^[a-z]+$"']
