"""README.md's notebook example ("In a notebook: scikit-learn estimators"), run as written except
for a few steps instead of five epochs: a digits pipeline whose features equal those of
`load_encoder` on the saved files (the block asserts it)."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.servers import REPO_ROOT

pytestmark = pytest.mark.slow

SECTION = "## In a notebook: scikit-learn estimators"
SHORTEN = ("epochs=5)", "epochs=5, max_steps=4)")


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    found = re.search(r"```python\n(.*?)```", text[text.index(SECTION):], re.S)
    assert found, f"no python block under {SECTION!r}"
    return found.group(1)


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert code.count(SHORTEN[0]) == 1, "the example's DCL(...) no longer ends with epochs=5: update SHORTEN"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(*SHORTEN), "README.md", "exec"), {"__name__": "__main__"})
    printed = dict(line.rsplit(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert float(printed["linear top-1"]) > 0.5  # ten classes: chance is 0.1
    assert float(printed["kNN top-1"]) > 0.5
    assert (tmp_path / "digits-dcl" / "encoder.safetensors").exists()
