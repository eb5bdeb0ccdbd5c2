"""Every code block of README.md, run in the order it is written, against a live `dcl serve
--embedded` (the service `make run` starts), so a snippet that drifts fails the tests.

- `sh` blocks run in bash (`set -eo pipefail`), `python` blocks in a fresh interpreter, all in
  one working folder that holds `my-images.zip` (a small labelled image archive), with the
  service's URL in place of http://127.0.0.1:8000 and in `DCL_URL`, and `.venv/bin` first on
  PATH. Shell variables a block sets (`JOB=...`) are there for the blocks after it (and as
  environment variables for the Python ones), as they would be in the reader's terminal.
- `json` blocks are configs: each must parse and validate as a `TrainConfig`.
- A block that cannot run here opts out with a comment on the line just above its fence that
  says why, e.g. `<!-- readme-test: skip: needs 4 GPUs -->`. Nothing else skips a block: one
  in a language this runner does not know fails, so a new section is either run or explained.

Blocks depend on the ones before them (an id from a submit, a downloaded run): run the whole
file (`pytest tests/test_readme.py`), not one block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO_ROOT, dcl_env, free_port, stop_process, wait_for_port
from tests.integration.helpers import image_zip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = REPO_ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*[:,-]?\s*(?P<why>.*?)\s*-->\s*$")
RUNNERS = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python", "json": "config"}
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # the reason, when the block opts out

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.lang or 'text'}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, with the opt-out comment above each, if any."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence.group(1)):
            body.append(lines[i])
            i += 1
        above = lines[start - 1].strip() if start else ""
        marker = SKIP.match(above)
        blocks.append(Block(start + 1, fence.group(2).lower(), "\n".join(body) + "\n", marker and marker.group("why")))
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_the_runner_reads_fences_and_opt_outs():
    text = "a\n```sh\necho 1\n```\n<!-- readme-test: skip: needs a GPU -->\n```python\nx = 1\n```\n```\nplain\n```\n"
    blocks = readme_blocks(text)
    assert [(b.line, b.lang, b.code, b.skip) for b in blocks] == [
        (2, "sh", "echo 1\n", None), (6, "python", "x = 1\n", "needs a GPU"), (9, "", "plain\n", None)]


def test_every_opt_out_says_why_and_every_block_has_a_runner():
    for block in BLOCKS:
        if block.skip is not None:
            assert len(block.skip.split()) >= 3, f"{block.id}: say why it cannot run (a few words), not {block.skip!r}"
        else:
            assert block.lang in RUNNERS, (f"{block.id}: no runner for {block.lang or 'a block without a language'!r}: "
                                           f"mark it ({', '.join(sorted(RUNNERS))}) or opt it out with a reason")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """`dcl serve --embedded` on a free port, and the readers' working folder."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    work.mkdir()
    (work / "my-images.zip").write_bytes(image_zip(num_per_class=40, size=16))
    port = free_port()
    env = dcl_env(root / "data", DCL_PORT=str(port))
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dcl_core.cli", "serve", "--embedded"], cwd=work, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 120, proc, log)
        url = f"http://127.0.0.1:{port}"
        shell_env = {**env, "DCL_URL": url, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                     "MPLBACKEND": "Agg"}
        yield {"url": url, "work": work, "env": shell_env, "state": root / "state.sh", "log": log}
    finally:
        stop_process(proc, timeout_s=20)


def run_shell(code: str, live: dict) -> subprocess.CompletedProcess:
    """The block in bash, after the variables earlier blocks set; the ones it sets are kept."""
    state = live["state"]
    state.touch()
    script = (f"set -eo pipefail\nset -a\nsource {state}\nset +a\n__before=$(compgen -v)\n{code}\n"
              f"for __v in $(comm -13 <(sort <<<\"$__before\") <(compgen -v | sort)); do\n"
              f"  [[ $__v == __* || $__v == BASH* || $__v == _ ]] || printf '%s=%q\\n' \"$__v\" \"${{!__v}}\" >> {state}\n"
              f"done\n")
    return subprocess.run(["bash", "-c", script], cwd=live["work"], env=live["env"], capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def run_python(code: str, live: dict) -> subprocess.CompletedProcess:
    launch = f"set -a\nsource {live['state']}\nset +a\nexec {sys.executable} -"
    live["state"].touch()
    return subprocess.run(["bash", "-c", launch], input=code, cwd=live["work"], env=live["env"], capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT_S)


def check_config(code: str) -> None:
    from dcl_core.config import TrainConfig

    TrainConfig.model_validate(json.loads(code))


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 120)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, live):
    if block.skip is not None:
        pytest.skip(f"opted out: {block.skip}")
    kind = RUNNERS.get(block.lang)
    assert kind is not None, f"{block.id}: no runner for this block (see test_every_opt_out_says_why...)"
    code = block.code.replace(README_URL, live["url"])
    if kind == "config":
        check_config(code)
        return
    done = run_shell(code, live) if kind == "shell" else run_python(code, live)
    assert done.returncode == 0, (f"{block.id} failed (exit {done.returncode}):\n{block.code}\n--- stdout\n"
                                  f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}\n--- server log\n"
                                  f"{live['log'].read_text(errors='replace')[-3000:]}")
