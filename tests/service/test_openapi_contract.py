"""The public API is a contract: the OpenAPI document may only grow. `openapi-0.1.json` is the
document of release 0.1 (before the control-plane split); every path, operation, parameter,
response and schema in it must still be there, unchanged (descriptions may be reworded)."""

from __future__ import annotations

import json
from pathlib import Path

from service.api.app import create_app
from service.control.settings import Settings

BASELINE = Path(__file__).with_name("openapi-0.1.json")


def removed_or_changed(old, new, path: str = "") -> list[str]:
    """Where `new` lost or changed something `old` has (additions are fine; prose is not a contract)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key, value in old.items():
            if key == "description":
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
